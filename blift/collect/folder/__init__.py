"""``folder.scan``: a folder of the user's own images and videos as a source.

``scan`` is the stage; ``listing`` walks a folder (sorted, recursive, no symbolic link followed,
``include``/``exclude`` patterns) and fingerprints what it found without reading any file;
``sidecar`` reads the optional table (CSV, JSONL or Parquet) that gives files a title, text, a
date, an author (hashed) and behavior counts.
"""
