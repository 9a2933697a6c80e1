"""Reward models, one per objective: a name, a fingerprint, and `score(prompts, responses)`.

The kinds, named the same way in every config (`rewards.models`):
- presets for the paper's Hugging Face reward models (`ray2333-helpful`, ...), each with its input
  format and logit index;
- any hub id or local folder of an `AutoModelForSequenceClassification`;
- the offline heads `paretohqd reward train` writes (`minilm-helpful`, ...): a small head on frozen
  all-MiniLM-L6-v2 embeddings;
- `column:LABEL`, a column objective: the data's label is its score for selection, and a head
  trained on that label (`paretohqd.rewards.labels`) scores generated answers;
- `rule:...`, a rule objective computed from the text (`paretohqd.rewards.rules`): a built-in
  (`rule:length_words`, `rule:vader`, ...) or a user function `rule:path/to/file.py:function`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from paretohqd.config import ConfigError
from paretohqd.rewards.base import (OFFLINE, PRESETS, Format, Preset, RewardModel, available, check_classifier,
                                    head_marker, resolve_dtype, state_fingerprint)
from paretohqd.rewards.rules import RULE, RuleRewardModel, load_rule

if TYPE_CHECKING:
    from paretohqd.config import DataConfig, RewardsConfig

__all__ = ["OFFLINE", "PRESETS", "Format", "Preset", "RewardModel", "available", "head_marker", "load_reward_model",
           "load_reward_models", "locate", "resolve_dtype", "state_fingerprint"]


def load_reward_model(name: str, cfg: RewardsConfig, *, _encoders: dict | None = None,
                      key: str | None = None) -> RewardModel:
    """One reward model by name (see the module docstring); `key` (`rewards.models.OBJECTIVE`)
    names it in a rule's errors.

    Raises:
        ConfigError: unknown name, missing folder, an offline head not trained yet, or a rule that
            cannot be loaded; the message lists what is available.
    """
    from paretohqd.rewards.hf import HFRewardModel

    kind, source = locate(name, cfg)
    if kind == "rule":
        return RuleRewardModel(name, key)
    if kind == "column":
        raise ConfigError(f"{name!r} is a column objective: its scorer is found by objective and data "
                          "(load_reward_models(cfg, data=...))")
    if kind == "offline":
        from paretohqd.rewards.minilm import load_head_model

        folder = Path(cfg.dir) / name
        if not head_marker(cfg, name).exists():
            raise ConfigError(
                f"reward model {name!r} is not trained yet ({folder} missing); run `paretohqd reward train "
                f"--only {name.removeprefix('minilm-')}` or set rewards.dir. Available: {available(cfg)}"
            )
        return load_head_model(folder, cfg, encoders=_encoders if _encoders is not None else {})
    preset = PRESETS.get(name)
    return HFRewardModel(source, cfg, format=preset.format if preset else cfg.format,
                         logit=preset.logit if preset else cfg.logit, name=name)


def locate(name: str, cfg: RewardsConfig) -> tuple[str, str | None]:
    """Where reward model `name` comes from, without loading its weights: ("hub", id), ("folder", path),
    ("offline", None) for a MiniLM head (trained on first use), ("column", LABEL) or ("rule", None)
    (its function is loaded here, to check it exists).

    Raises:
        ConfigError: a name that is none of these, a folder without config.json, or a rule that
            cannot be loaded.
    """
    if name.startswith(RULE):
        load_rule(name)
        return "rule", None
    if name.startswith("column:"):
        if not name[len("column:"):].strip():
            raise ConfigError(f"{name!r}: name the label column after column:, e.g. column:helpfulness")
        return "column", name[len("column:"):]
    if name in PRESETS:
        return "hub", PRESETS[name].hub_id
    if name in OFFLINE:
        return "offline", None
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError(f"reward model folder {path} has no config.json. Available: {available(cfg)}")
        if not any(any(path.glob(p)) for p in ("*.safetensors", "*.bin", "*.index.json")):
            raise ConfigError(f"reward model folder {path} holds no weights (*.safetensors or *.bin); save the "
                              "model there with save_pretrained")
        check_classifier(path / "config.json", name)
        return "folder", str(path)
    if _looks_like_hub_id(name):
        return "hub", name
    raise ConfigError(f"unknown reward model {name!r}: not a preset, offline head, folder or hub id. Available: {available(cfg)}")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    # owner/name with no path-like pieces; anything else that is not a folder is a typo'd path
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def load_reward_models(cfg: RewardsConfig, *, data: DataConfig | None = None,
                       only: list[str] | None = None) -> dict[str, RewardModel]:
    """Every model in `cfg.models` (or the objectives `only`), by objective name. Offline heads and
    column objectives' scorers share one encoder instance, so the scoring engine embeds each text
    once for all of them; a column objective's scorer is the one trained on `data.sources`.

    Raises:
        ConfigError: no objectives, an unknown name, a head or scorer not trained yet.
    """
    if not cfg.models:
        raise ConfigError(f"rewards.models is empty; name at least one objective, e.g. helpful=minilm-helpful. Available: {available(cfg)}")
    encoders: dict = {}
    out: dict[str, RewardModel] = {}
    for obj, name in cfg.models.items():
        if only is not None and obj not in only:
            continue
        if name.startswith("column:"):
            from paretohqd.rewards.labels import load_scorer

            if data is None:
                raise ValueError(f"objective {obj!r} is a column objective: pass data= to find its scorer")
            out[obj] = load_scorer(cfg, data, obj, encoders=encoders)
        else:
            out[obj] = load_reward_model(name, cfg, _encoders=encoders, key=f"rewards.models.{obj}")
    return out
