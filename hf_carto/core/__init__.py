"""Shared foundations: column names, file I/O, locks and atomic writes, batching helpers, tiny models, plots."""
