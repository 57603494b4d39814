"""Tables a user already has (CSV, TSV, JSON lines, Parquet, a Hugging Face dataset) as a source.

Most behavior data does not come from an API blift knows: it sits in a spreadsheet export, a
``metadata.jsonl`` next to a folder of images, a Parquet file of URLs and like counts (what
img2dataset and video2dataset read), or a dataset on the Hub. ``table.read`` maps the columns of
such a table onto the same ``items`` / ``comments`` / ``videos`` tables every other source
writes, plus ``behavior`` (each named value with its meaning: a count, a ratio, a score on a
scale), so cleaning, media download, templates and release work on it unchanged.

The parts, one job each:

* :mod:`~blift.collect.table.inputs`: what a request names (a file, folder, glob or fsspec URL,
  or a Hub dataset) and reading it as a stream of row batches, with per-row and per-file failures
  kept apart;
* :mod:`~blift.collect.table.mapping`: the column mapping, one row dict to item, comments and
  behavior rows, whatever read the row (another source maps the sidecar tables of a media folder
  with it);
* :mod:`~blift.collect.table.media`: the media a row names: URLs kept, local files checked
  against the allowed folders and copied into the run's content-addressed store;
* :mod:`~blift.collect.table.seen`: which ids the stream has already written, in 8 bytes each;
* :mod:`~blift.collect.table.read`: the stage (``table.read``), a stream stage that buckets
  every table by item, like ``reddit.dumps``; its reading part (``TableStreamStage``, ``RowStream``)
  is shared with sources that map the rows their own way (``cbc.read``).
"""
