"""Where a model runs and in what precision: one rule for every model-backed stage.

``device="auto"`` means the first CUDA GPU when one is visible (the executor pins one GPU per
worker through ``CUDA_VISIBLE_DEVICES``), else the CPU. ``dtype="auto"`` means bfloat16 on a GPU
that supports it (Ampere and newer: same range as float32, so no overflow in long generations),
float16 on older GPUs, and float32 on the CPU (CPU half-precision matmuls are slow or missing).

torch is imported lazily: importing this module must stay cheap (config validation and the
runner's parent process import stage modules without running models), and some backends
(faster-whisper/CTranslate2) do not need torch at all.
"""

from __future__ import annotations

import logging
from typing import Any

from blift.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def torch_cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def ctranslate2_cuda_devices() -> int:
    """CUDA devices CTranslate2 sees (faster-whisper runs on it, not on torch); 0 without it."""
    try:
        import ctranslate2
    except ImportError:
        return 0
    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # noqa: BLE001 - a broken CUDA install or a CPU-only build means "no GPU", not a crash
        return 0


def _cuda_devices(runtime: str) -> int:
    if runtime == "ctranslate2":
        return ctranslate2_cuda_devices()
    if not torch_cuda_available():
        return 0
    import torch

    return int(torch.cuda.device_count())


def pick_device(requested: str | None = "auto", *, where: str = "device", runtime: str = "torch") -> str:
    """``auto`` -> ``cuda`` when ``runtime`` (torch, or ctranslate2 for faster-whisper) sees a GPU,
    else ``cpu``; an explicit device is checked, so asking for a GPU on a machine without one is a
    configuration error instead of a slow CPU run."""
    value = (requested or "auto").strip().lower()
    if value == "auto":
        return "cuda" if _cuda_devices(runtime) else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "cuda" or value.startswith("cuda:"):
        count = _cuda_devices(runtime)
        if not count:
            name = "CTranslate2" if runtime == "ctranslate2" else "torch"
            raise ConfigError(f"{where}: {requested!r} asked for, but {name} sees no CUDA device; use 'auto' or 'cpu'")
        if ":" in value:
            index = value.split(":", 1)[1]
            if not index.isdigit() or int(index) >= count:
                raise ConfigError(f"{where}: {requested!r}: only {count} CUDA device(s) visible")
        return value
    if value == "mps" and runtime == "torch":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(f"{where}: 'mps' asked for, but torch reports no MPS device")
        return value
    raise ConfigError(f"{where}: unknown device {requested!r}; expected auto, cpu, cuda, cuda:N or mps")


def dtype_name(requested: str | None, device: str, *, where: str = "dtype") -> str:
    """The precision a model runs in on ``device``, as a torch dtype name."""
    value = (requested or "auto").strip().lower()
    value = _ALIASES.get(value, value)
    if value not in DTYPES:
        raise ConfigError(f"{where}: unknown dtype {requested!r}; expected one of {', '.join(DTYPES)}")
    if value != "auto":
        if device == "cpu" and value == "float16":
            log.warning("%s: float16 on the CPU is slow and some ops lack kernels; consider float32", where)
        return value
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else None
        with torch.cuda.device(index) if index is not None else _null():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def describe(device: str, dtype: str) -> str:
    """``cuda (NVIDIA H100, bfloat16)`` or ``cpu (float32)`` for logs and ``describe()`` lines."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return f"{device} ({torch.cuda.get_device_name(index)}, {dtype})"
    return f"{device} ({dtype})"


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
