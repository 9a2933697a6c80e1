"""What every reward model shares: the protocol, the names (presets, offline heads), dtypes and
fingerprints. `paretohqd.rewards` loads models by name (its docstring lists the three kinds);
`hf` and `minilm` implement them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, Sequence

import numpy as np

from paretohqd.devices import native_bf16

if TYPE_CHECKING:
    from paretohqd.config import RewardsConfig

Format = Literal["pair", "response"]


class RewardModel(Protocol):
    name: str
    """The name it was loaded by (a preset, hub id, folder or offline head)."""
    fingerprint: str
    """Hex digest of weights and scoring settings: the score cache's key."""

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """One float per (prompt, response); prompts are HH text without the trailing "Assistant:"."""
        ...


@dataclass(frozen=True)
class Preset:
    hub_id: str
    format: Format
    logit: int


PRESETS: dict[str, Preset] = {
    # Rewards-in-Context's reward models, as the paper uses them (pair input, one logit)
    "ray2333-harmless": Preset("Ray2333/gpt2-large-harmless-reward_model", "pair", 0),
    "ray2333-helpful": Preset("Ray2333/gpt2-large-helpful-reward_model", "pair", 0),
    # a two-class classifier: logit 1 is "humor"
    "humor-no-humor": Preset("mohameddhiab/humor-no-humor", "response", 1),
}
OFFLINE = ("minilm-helpful", "minilm-harmless", "minilm-humor")


def head_marker(cfg: RewardsConfig, name: str) -> Path:
    """The file whose presence marks offline head `name` as trained (its config.json, saved last)."""
    return Path(cfg.dir) / name / "config.json"


def available(cfg: RewardsConfig) -> str:
    """What a name may be, for error messages."""
    trained = [n for n in OFFLINE if head_marker(cfg, n).exists()]
    return (
        f"presets {sorted(PRESETS)}; offline heads {list(OFFLINE)} (trained in {cfg.dir}: "
        f"{trained or 'none yet, run `paretohqd reward train`'}); or a hub id (owner/name) or a local "
        "folder of a sequence-classification model; or a rule computed from the text: rule:length_words, "
        "rule:length_tokens, rule:target_length:N, rule:vader, rule:diversity, rule:overlap, or "
        "rule:path/to/file.py:function (TRL reward-function shape)"
    )


def resolve_dtype(dtype: str, device: str):
    """`auto` -> bfloat16 where the hardware has native support, else float32; other names as given."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    return torch.bfloat16 if native_bf16(device) else torch.float32


def state_fingerprint(module, *extra: object) -> str:
    """Cheap digest of a torch module's weights plus settings.

    Hashes every tensor's name, shape and dtype and ~1k strided values of it (not every byte: a
    gpt2-large would take seconds), so any retrained or swapped weights change the key.
    """
    h = hashlib.sha256(repr(extra).encode())
    for name, t in module.state_dict().items():
        flat = t.detach().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]




# heads a reward model must not have: transformers would load such a model as a sequence
# classifier all the same, with a freshly initialised (random) score head
_NOT_CLASSIFIERS = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration", "ForTokenClassification",
                    "ForQuestionAnswering")


def check_architectures(architectures: list[str], name: str) -> None:
    """Refuse a model whose config names a language model (or another head), not a sequence classifier.

    Raises:
        ConfigError: naming the architecture.
    """
    from paretohqd.config import ConfigError

    if architectures and all(a.endswith(_NOT_CLASSIFIERS) for a in architectures):
        raise ConfigError(f"reward model {name!r} is a {architectures[0]}, not a sequence classifier: its score "
                          "head would be random; give a reward model (AutoModelForSequenceClassification)")


def check_classifier(config_json: Path, name: str) -> None:
    """`check_architectures` on a model folder's config.json.

    Raises:
        ConfigError: unreadable config.json, or not a sequence classifier.
    """
    import json

    from paretohqd.config import ConfigError

    try:
        config = json.loads(config_json.read_text())
        arch = config.get("architectures") or [] if isinstance(config, dict) else None
        if not isinstance(arch, list):
            raise ValueError("not a JSON object with a list of architectures")
    except (OSError, ValueError) as e:
        raise ConfigError(f"reward model {name!r}: {config_json} cannot be read ({str(e)[:120]})") from None
    check_architectures([str(a) for a in arch], name)
