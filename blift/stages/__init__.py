"""Processing stages, one per registered name: ``blift.stages.<name>`` is the ``<name>`` stage.

A stage with parts of its own is a package (its class in ``stage.py``, re-exported here);
libraries shared by several stages live outside: ``blift.models``, ``blift.video``, ``blift.images``.
"""
