"""The ``scenes`` stage: scene cuts, keyframes and sampled frames per video.

The stage class lives in ``stage.py``; the other modules here are its parts."""

from blift.stages.scenes.stage import ScenesConfig, ScenesStage

__all__ = ['ScenesConfig', 'ScenesStage']
