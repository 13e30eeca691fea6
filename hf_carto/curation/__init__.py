"""Acting on the scores: curation policies, the comparison arms, and weighted retraining."""
