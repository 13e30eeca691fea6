"""Shared foundations: column names, the forget threshold and the scoring arithmetic, locks and atomic
writes, batching helpers, tiny models, plots."""
