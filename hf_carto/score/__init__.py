"""Scores from the loss matrix: difficulty, forget events, quadrants, detectors, duplicates, several runs."""
