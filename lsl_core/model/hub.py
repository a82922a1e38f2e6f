"""The one download switch: weights come from local folders or the local Hugging Face cache unless the
user opts in with LSL_ALLOW_DOWNLOAD=1 (and HF_HUB_OFFLINE is not set); and the one lock every model load
takes (serialized_load)."""

from __future__ import annotations

import functools
import os
import threading

DOWNLOAD_ENV = "LSL_ALLOW_DOWNLOAD"


def allow_download() -> bool:
    """True only when LSL_ALLOW_DOWNLOAD=1 and HF_HUB_OFFLINE is not 1."""
    return os.environ.get(DOWNLOAD_ENV, "0") == "1" and os.environ.get("HF_HUB_OFFLINE", "0") != "1"


LOAD_LOCK = threading.RLock()  # held by every model load in this process (serialized_load)


def serialized_load(fn):
    """Run a model-loading function under LOAD_LOCK. transformers builds a model on torch's meta device and
    then fills it; two loads in parallel threads (two app sessions opening different checkpoints) break each
    other: "Cannot copy out of meta tensor", or an LM head left newly initialised (tests/test_model_stack.py
    loads in parallel threads). Re-entrant: a load may call another."""

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with LOAD_LOCK:
            return fn(*args, **kwargs)

    return locked
