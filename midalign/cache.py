"""The cache folder for converted models and prepared data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where midalign keeps converted models and data (MIDALIGN_CACHE, default ~/.cache/midalign)."""
    return Path(os.environ.get("MIDALIGN_CACHE", "~/.cache/midalign")).expanduser()
