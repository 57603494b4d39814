"""The ``instruct`` stage: BLIFT instruction records from items, comments and media facts, through versioned templates.

The stage class lives in ``stage.py``; the other modules here are its parts."""

from blift.stages.instruct.stage import InstructStage

__all__ = ['InstructStage']
