"""Recording per-sample losses while a model trains, and merging them into the loss matrix and columns."""
