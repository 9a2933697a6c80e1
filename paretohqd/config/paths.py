"""Where defaults point: the shared data beside the repository and the cache of converted models."""

from __future__ import annotations

import os
from pathlib import Path

# Where the offline default data lies: ../shared beside the repo, or $PARETOHQD_SHARED.
SHARED_DIR = Path(os.environ.get("PARETOHQD_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))


def cache_dir() -> Path:
    """Where converted models, reward heads and score caches live: $PARETOHQD_CACHE, else ~/.cache/paretohqd."""
    return Path(os.environ.get("PARETOHQD_CACHE", Path.home() / ".cache" / "paretohqd"))
