#!/usr/bin/env bash
# Install blift and everything it needs into ./.venv, plus Debian packages when missing.
# Usage: bash install.sh            (everything)
# Safe to rerun: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
APT_PKGS=(tesseract-ocr ffmpeg espeak-ng)

missing=()
command -v tesseract >/dev/null || missing+=(tesseract-ocr)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "install.sh: creating .venv"
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check -U pip
# torch first, pinned: here it resolves to the local CPU wheel; a range would pull CUDA wheels.
# torchvision is never installed (it would replace torch with a CUDA build).
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q --disable-pip-version-check "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[all]"
# openai-whisper (the second ASR backend) without its triton dependency (~1 GB, GPU-only);
# pip then reports triton as missing, which is expected.
.venv/bin/python -c "import whisper" 2>/dev/null || {
  $PIP install -q --disable-pip-version-check --no-deps "openai-whisper>=20240930"
  $PIP install -q --disable-pip-version-check tiktoken numba more-itertools tqdm 2>&1 | grep -v -i triton || true
}
echo "install.sh: done ($(.venv/bin/blift version))"
