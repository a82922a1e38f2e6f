"""Where converted weights, encoder features and analysis results are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Cache folder (created): $LSL_CACHE_DIR or the user cache dir, plus optional sub-parts."""
    root = os.environ.get("LSL_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("modality-gap-explorer")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
