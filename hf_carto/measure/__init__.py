"""Leakage and its comparison: extraction, exposure, contamination, membership, detection quality, statistics."""
