"""blift: build, release and use BLIFT-style datasets (media paired with receiver behavior)."""

__version__ = "0.1.0"
