"""The ``hf-carto`` command line: one module per command."""
