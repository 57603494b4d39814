"""Model backends behind small interfaces (docs/architecture.md), so stages never import a model library.

* ``transcriber``: the ``Transcriber`` interface (speech recognition), with its faster-whisper
  and openai-whisper backends in their own modules.
* ``captioner``: the ``Captioner`` interface (vision-language captions).
* ``devices``: one rule for device and precision choice of torch-based models.

Nothing is imported here: each backend imports its library only when it is built.
"""
