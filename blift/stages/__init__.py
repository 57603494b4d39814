"""Processing stages: cleaning, attributes, and (later) scenes, ASR, captions."""
