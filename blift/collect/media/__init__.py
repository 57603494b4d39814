"""``media.download``: media files fetched (or probed) into the run's content-addressed store."""
