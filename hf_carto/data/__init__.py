"""Data in: the generated corpus, tokenizers, canaries and contamination, packing into training blocks."""
