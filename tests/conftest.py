import functools
import gzip
import itertools
import os
from pathlib import Path

import pytest

from paretohqd.config import SHARED_DIR
from paretohqd.testing import tiny_assets, tiny_llama, tiny_run_overrides

HH_DIR = SHARED_DIR / "data" / "hh-rlhf"
RJOKES = SHARED_DIR / "data" / "rjokes" / "rjokes-dev.tsv.gz"

# tests never touch the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist (`make test`: one worker per core, at most 4) each worker computes on its
# share of the cores, and so do the processes its tests start (OMP_NUM_THREADS): a run made in the
# worker and one made in a subprocess still sum in the same order, as the tests comparing them need.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch

    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


@pytest.fixture(scope="session")
def hh_dir() -> Path:
    if not HH_DIR.exists():
        pytest.fail(f"shared HH-RLHF data missing at {HH_DIR} (set PARETOHQD_SHARED)")
    return HH_DIR


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer (converted once from the packaged GGUF into the cache)."""
    from paretohqd.policy.load import OFFLINE_SMOLLM2, load_tokenizer

    return load_tokenizer(OFFLINE_SMOLLM2)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, smol_tokenizer) -> str:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer, saved as a folder."""
    return str(tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smol_tokenizer))


@pytest.fixture(scope="session")
def hh_samples(hh_dir):
    """40 real HH samples (prompt messages, response), short ones so tests stay fast."""
    from paretohqd.data.hh_rlhf import read_pairs
    from paretohqd.data.transcript import to_messages

    out = []
    for pair in read_pairs([str(hh_dir / "helpful-base.jsonl.gz")]):
        for prompt, response in pair.samples():
            if len(prompt) + len(response) < 400 and response:
                out.append((to_messages(prompt), response))
        if len(out) >= 40:
            return out
    return out


@pytest.fixture(scope="session")
def small_hh(tmp_path_factory, hh_dir):
    """The first 40 real rows of each HH subset, as HH files."""
    folder = tmp_path_factory.mktemp("hh")
    for subset in ("helpful-base", "harmless-base"):
        with gzip.open(hh_dir / f"{subset}.jsonl.gz", "rt") as src, gzip.open(folder / f"{subset}.jsonl.gz", "wt") as dst:
            dst.writelines(itertools.islice(src, 40))
    return folder


class BagOfWords:
    """A fast stand-in for the MiniLM encoder (same interface, 384-d unit vectors): each word a fixed
    random direction (seeded by its hash), a text the normalised sum of its words. For tests of what is
    built on embeddings (label-trained scorers, a whole run), where MiniLM would take most of the time
    on a 2-core CPU; the real encoder runs in the tests marked slow."""

    fingerprint = "bag-of-words"

    def __init__(self, **_):
        self.store = None

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _word(word: str):
        import hashlib

        import numpy as np

        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=384).astype(np.float32)

    def embed(self, texts, *, batch_size: int = 32):
        import re

        import numpy as np

        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i] += self._word(word)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def bag_of_words(monkeypatch):
    """Every encoder built while the test runs is `BagOfWords` (the scorers' training and loading)."""
    from paretohqd.rewards import labels, minilm

    monkeypatch.setattr(minilm, "Encoder", BagOfWords)
    monkeypatch.setattr(labels, "Encoder", BagOfWords)
    return BagOfWords


@pytest.fixture(scope="session")
def minilm_rewards_dir(tmp_path_factory):
    """A rewards.dir the slow tests on the real MiniLM share, so a text they both read (the first 300
    HH answers) is embedded once a session."""
    return tmp_path_factory.mktemp("minilm-rewards")


@pytest.fixture(scope="session")
def chaos_assets(tmp_path_factory, hh_dir) -> dict[str, str]:
    """What `benchmarks/chaos.py` runs on: a random 2-layer Llama (SmolLM2's tokenizer), two random
    1-layer BERT reward models (real Hugging Face scoring, in no time) and 40 HH rows per subset."""
    return tiny_assets(tmp_path_factory.mktemp("chaos-assets"))


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory, chaos_assets) -> tuple[Path, list[str]]:
    """A finished tiny run (`tiny_run_overrides`) and its overrides; copy it before changing it."""
    from paretohqd import pipeline
    from paretohqd.config import load_config

    work = tmp_path_factory.mktemp("finished")
    sets = tiny_run_overrides(chaos_assets, work / "runs", work / "rewards", "tiny")
    return pipeline.run(load_config("configs/demo.yaml", sets)), sets
