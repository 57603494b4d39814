"""The ``attributes`` stage: colours, tone, brightness, complexity and on-screen text per image and scene keyframe.

The stage class lives in ``stage.py``; the other modules here are its parts."""

from blift.stages.attributes.stage import AttributesConfig, AttributesStage

__all__ = ['AttributesConfig', 'AttributesStage']
