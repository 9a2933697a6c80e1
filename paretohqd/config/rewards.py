"""`rewards`: the objectives and their reward models (`paretohqd.rewards`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from paretohqd.config.paths import SHARED_DIR, cache_dir
from paretohqd.config.section import Section


def _default_rewards_dir() -> str:
    return str(cache_dir() / "rewards")


class RewardsConfig(Section):
    models: dict[str, str] = {"helpful": "minilm-helpful", "harmless": "minilm-harmless"}
    """Objective name -> reward model: a preset (`ray2333-helpful`, `ray2333-harmless`, `humor-no-humor`), an offline head (`minilm-helpful`, `minilm-harmless`, `minilm-humor`), any hub id / local folder of a sequence classifier, `column:NAME`: the data's label column NAME is the score for selection, and the scorer `paretohqd reward train --objective OBJECTIVE` trained on that label scores generated answers; or `rule:...`, an exact score computed from the text, no training: `rule:length_words`, `rule:length_tokens` (words and punctuation marks), `rule:target_length:N` (-|words - N| / N), `rule:vader` (VADER compound sentiment), `rule:diversity` (distinct words / words), `rule:overlap` (share of the prompt's content words the answer mentions), or a function `rule:path/to/file.py:NAME` / `rule:package.module:NAME` of TRL's reward shape `f(prompts, completions, **kw) -> list[float]`."""
    dir: str = Field(default_factory=_default_rewards_dir)
    """Where `reward train` saves the offline heads; the score cache (`scores/`) and MiniLM embedding cache (`embeddings/`) live here too."""
    batch_size: int = Field(32, ge=1)
    """Samples per forward pass when scoring."""
    chunk_size: int = Field(256, ge=1)
    """Samples per score-cache file: what a killed run may lose, and under a launcher one process's share of
    the scoring at a time (the processes take turns by chunk: a table of fewer keeps the others waiting)."""
    device: str = "cpu"
    """Torch device for reward models, e.g. `cpu` or `cuda`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Reward model compute dtype (the offline heads' encoder too; caches key on it). `auto`: bfloat16 where the CPU or GPU runs it natively (2.5x faster on AMX CPUs), else float32."""
    max_length: int = Field(512, ge=8)
    """Token cap per reward-model input (ours: 512; RiC's `multi_reward_models.py`: min(the tokenizer's
    model_max_length, 1024)). The MiniLM encoder caps at 256."""
    truncation_side: Literal["left", "right"] = "left"
    """Which end a sequence classifier's too-long input loses: `left` (ours) drops the start of the dialogue
    and keeps the response's end; `right` (the tokenizer's default, which RiC's reward scoring keeps) drops
    the end. The offline MiniLM heads keep sentence-transformers' own truncation."""
    format: Literal["pair", "response"] = "pair"
    """Input format of a hub id / folder that is not a preset: prompt+response as a text pair, or the response only."""
    logit: int = Field(0, ge=0)
    """Logit index read as the score, for a hub id / folder that is not a preset."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you trust the repository."""
    seed: int = 0
    """Seed for `reward train`: held-out split, subsampling, initialisation and shuffling."""
    held_out: float = Field(0.2, gt=0, lt=1)
    """Fraction of pairs (and humor examples) kept out of training to measure accuracy."""
    epochs: int = Field(20, ge=1)
    """Passes over the training pairs per head."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate for the heads."""
    weight_decay: float = Field(1e-2, ge=0)
    """AdamW weight decay for the heads."""
    hidden: int = Field(0, ge=0)
    """Hidden units of the head's MLP; 0 makes it linear (on a validation split of HH training pairs a 128-unit MLP overfit: 0.57 vs 0.63 for linear on helpful)."""
    humor_positives: int = Field(2000, ge=1)
    """Jokes sampled from `jokes` as humor positives."""
    humor_negatives: int = Field(2000, ge=1)
    """HH responses sampled as humor negatives."""
    jokes: str = str(SHARED_DIR / "data" / "rjokes" / "rjokes-dev.tsv.gz")
    """r/Jokes `score<TAB>joke` file (.tsv or .tsv.gz) for the humor head."""
    ridge_alphas: list[float] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    """Ridge penalties tried for a scorer trained on a label column (`reward train --from-column`), in units of
    the mean eigenvalue of the feature Gram matrix (so they do not depend on the data size); the one with the
    lowest validation error is kept."""

    @field_validator("ridge_alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v or min(v) <= 0:
            raise ValueError(f"give at least one penalty, each > 0 (got {v})")
        return v


# Method sections ---------------------------------------------------------------------------------
# One section per baseline that has settings, each read by the method module its docstring names
# (`methods.METHODS[name].reads` lists a method's sections; tests/test_methods.py checks that every
# section here is read by a registered method). They stay here, not beside their methods: `Config`
# is read by every layer below `methods` (runfolder, select, policy, report), so its sections must
# live in a module those layers may import, and the methods layer is above them all.
