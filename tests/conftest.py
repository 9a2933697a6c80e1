import os
from pathlib import Path

import pytest

from paretohqd.config import SHARED_DIR

HH_DIR = SHARED_DIR / "data" / "hh-rlhf"
RJOKES = SHARED_DIR / "data" / "rjokes" / "rjokes-dev.tsv.gz"

# tests never touch the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def hh_dir() -> Path:
    if not HH_DIR.exists():
        pytest.fail(f"shared HH-RLHF data missing at {HH_DIR} (set PARETOHQD_SHARED)")
    return HH_DIR


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer (converted once from the packaged GGUF into the cache)."""
    from paretohqd.models import OFFLINE_SMOLLM2, load_tokenizer

    return load_tokenizer(OFFLINE_SMOLLM2)
