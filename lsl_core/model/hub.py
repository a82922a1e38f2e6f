"""The one download switch: weights come from local folders or the local Hugging Face cache unless the
user opts in with LSL_ALLOW_DOWNLOAD=1 (and HF_HUB_OFFLINE is not set)."""

from __future__ import annotations

import os

DOWNLOAD_ENV = "LSL_ALLOW_DOWNLOAD"


def allow_download() -> bool:
    """True only when LSL_ALLOW_DOWNLOAD=1 and HF_HUB_OFFLINE is not 1."""
    return os.environ.get(DOWNLOAD_ENV, "0") == "1" and os.environ.get("HF_HUB_OFFLINE", "0") != "1"
