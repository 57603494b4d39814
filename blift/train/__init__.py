"""Fine-tune LLaVA-family models on released BLIFT records (``blift train``)."""
