"""Publishing a curated dataset and model: the Hub layout, cards, the interactive data map."""
