"""LCBM's Content Behavior Corpus (CBC) as a source: ``behavior-in-the-wild/content-behavior-corpus``
on the Hugging Face Hub, YouTube brand videos with their likes, views, subscribers and replay graph,
and LCBM's per-scene annotations (BLIP-2 captions, objects, actions, OCR, ASR), read into the
tables every other source and stage writes.

The parts, one job each:

* :mod:`~blift.collect.cbc.values`: reading one value (a struct, a list, a count, seconds, a date)
  the same way from Parquet, JSON lines or CSV, with what is wrong named or counted;
* :mod:`~blift.collect.cbc.replay`: the replay markers as a 0..1 ``heatmap`` (the scale choice);
* :mod:`~blift.collect.cbc.transcript`: ``asr_raw`` as a ``transcripts`` row;
* :mod:`~blift.collect.cbc.scene_lists`: the per-scene lists as ``captions`` and ``attributes`` rows;
* :mod:`~blift.collect.cbc.rows`: one CBC row as every table's rows, and what ``raw`` keeps;
* :mod:`~blift.collect.cbc.read`: the stage (``cbc.read``), ``table.read``'s stream with this
  row mapping.
"""
