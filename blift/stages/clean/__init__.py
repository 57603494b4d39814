"""The ``clean`` stage: comment and item filters (rules, language, toxicity, near-duplicates).

The stage class lives in ``stage.py``; the other modules here are its parts."""

from blift.stages.clean.stage import CleanStage

__all__ = ['CleanStage']
