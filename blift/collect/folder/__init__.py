"""``folder.scan``: a folder of the user's own images and videos as a source.

``scan`` is the stage; ``listing`` walks a folder (sorted, recursive, no symbolic link followed,
``include``/``exclude`` patterns) and fingerprints what it found without reading any file;
``sidecar`` joins the optional table about the files to them, read and mapped with
:mod:`blift.collect.table` (title, text, date, author hashed, comments, named behavior values).
"""
