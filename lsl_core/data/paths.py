"""Where the shipped assets live (the repo's assets/ folder, next to the package)."""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    """The shipped assets folder ($LSL_ASSETS_DIR overrides, e.g. in a container)."""
    env = os.environ.get("LSL_ASSETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets"
