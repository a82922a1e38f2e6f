"""Where the app finds its models, samples and results: environment variables over shipped defaults.

    LSL_ZOO                 folders searched for manifest.json (os.pathsep-separated);
                            default: assets/checkpoints (the shipped demo checkpoints)
    LSL_DEFAULT_CHECKPOINT  the model selected on a fresh session (a manifest or its folder);
                            default: lsl_core.model.loading.default_checkpoint() when it is in the zoo
    LSL_SAMPLE_SET          the sample set of a fresh session (a load_sample_set spec); default sd-qa-mini
    LSL_RESULTS_DIR         evaluation results (lsl_core.results); default assets/results
    LSL_DEVICE              cpu | cuda | cuda:1 (default: CUDA when available)
    LSL_MAX_UPLOAD_MB       upload size limit in MB (default 20)

Tests point these at tiny random models and a sample folder in a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsl_core.data.paths import assets_dir

DEFAULT_SET = "sd-qa-mini"
DEFAULT_MAX_UPLOAD_MB = 20.0


def zoo_folders() -> list[Path]:
    """The model zoo folders ($LSL_ZOO, else assets/checkpoints)."""
    env = os.environ.get("LSL_ZOO", "").strip()
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return [assets_dir() / "checkpoints"]


def default_checkpoint_root(roots: list[str]) -> str | None:
    """The zoo entry (manifest folder) a fresh session selects, or None for an empty zoo."""
    if not roots:
        return None
    env = os.environ.get("LSL_DEFAULT_CHECKPOINT", "").strip()
    candidates = []
    if env:
        p = Path(env).expanduser().resolve()
        candidates.append(str(p.parent if p.is_file() else p))
    try:
        from lsl_core.model.loading import default_checkpoint

        candidates.append(str(Path(default_checkpoint()).resolve()))
    except Exception:  # an unreadable shipped zoo must not stop the app
        pass
    for c in candidates:
        if c in roots:
            return c
    return roots[0]


def default_set_spec() -> str:
    return os.environ.get("LSL_SAMPLE_SET", "").strip() or DEFAULT_SET


def device() -> str | None:
    return os.environ.get("LSL_DEVICE", "").strip() or None


def max_upload_mb() -> float:
    try:
        return float(os.environ.get("LSL_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB))
    except ValueError:
        return DEFAULT_MAX_UPLOAD_MB


def results_dir() -> Path:
    from lsl_core.results import default_results_dir

    return default_results_dir()
