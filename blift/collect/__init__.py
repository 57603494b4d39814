"""Sources: stages whose input is a request table and whose output is items, comments, media.

Grouped by platform; ``blift.collect.<platform>.<verb>`` is the ``<platform>.<verb>`` stage.
"""
