"""Exports of a release into the formats other trainers read (LLaVA / LLaMA-VID JSON + media)."""

from blift.export.llava import (
    ExportError,
    ExportReport,
    ExportValidationError,
    export_llava,
)
from blift.export.validate import validate_export

__all__ = ["ExportError", "ExportReport", "ExportValidationError", "export_llava", "validate_export"]
