"""Score models on behavior prediction and content understanding (``blift eval``)."""
