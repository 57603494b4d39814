"""Release: Hugging Face layout, dataset card, load_dataset self-check."""
