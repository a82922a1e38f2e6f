"""Where converted weights, encoder features and analysis results are cached on disk.

NpzJsonStore: the one on-disk layout of cached result dataclasses (analysis, controls): the numpy array
fields in <key>.npz (no pickle), every other field in <key>.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Cache folder (created): $LSL_CACHE_DIR or the user cache dir, plus optional sub-parts."""
    root = os.environ.get("LSL_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("modality-gap-explorer")
    path = Path(root).expanduser().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only disk
        from lsl_core.errors import LSLError

        where = "$LSL_CACHE_DIR" if os.environ.get("LSL_CACHE_DIR") else "the user cache folder"
        raise LSLError(f"The cache folder {path} ({where}) cannot be created: {exc.strerror or exc}. Set "
                       "LSL_CACHE_DIR to a folder you can write to.") from None
    return path


class NpzJsonStore:
    """Dataclass instances on disk as <key>.npz (its numpy array fields) + <key>.json (the rest)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npz", self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        return all(p.is_file() for p in self.paths(key))

    def read(self, key: str) -> tuple[dict, dict] | None:
        """(json fields, array fields) of an entry, or None when it is missing or torn (recompute)."""
        import zipfile

        import numpy as np

        npz, js = self.paths(key)
        if not (npz.is_file() and js.is_file()):
            return None
        try:
            meta = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a truncated npz is not a zip, or ends early
            return None
        return (meta, arrays) if isinstance(meta, dict) else None

    def write(self, key: str, obj, skip: tuple[str, ...] = ()) -> None:
        """Store dataclass `obj`: array fields -> npz, the others -> json; fields named in `skip` that are
        not arrays are left out (the reader supplies them).

        Each file is written to its own temp file and renamed into place, so concurrent writers of one key
        never share a half-written file; the old json is removed before the new npz lands, so a crash between
        the two renames leaves an entry that reads as missing, never new arrays under old fields.
        """
        import numpy as np

        npz, js = self.paths(key)
        arrays = {f.name: getattr(obj, f.name) for f in fields(obj) if isinstance(getattr(obj, f.name), np.ndarray)}
        meta = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in arrays and f.name not in skip}
        tmp_npz = self._temp(npz)
        try:
            with tmp_npz.open("wb") as fh:
                np.savez(fh, **arrays)
            js.unlink(missing_ok=True)
            os.replace(tmp_npz, npz)
        finally:
            tmp_npz.unlink(missing_ok=True)
        tmp_js = self._temp(js)
        try:
            tmp_js.write_text(json.dumps(meta))
            os.replace(tmp_js, js)
        finally:
            tmp_js.unlink(missing_ok=True)

    @staticmethod
    def _temp(path: Path) -> Path:
        """A temp name next to `path`, unique per write (any process, any thread)."""
        import uuid

        return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
