"""The run's SFT model (`sft_start`), which MORLHF (`morlhf.init: sft`), Rewarded Soups' RL objectives
and MODPO (`modpo.init: sft`) start from and hold to: one implementation, one model per run.

As RiC's MORLHF (`ppo/morlhf.py`: `base_model_name` is "the path to the sft model") and MODPO's
authors (their scripts SFT first, `scripts/examples/sft/sft.py` with `chosen_only=True`, then pass
that model as `--sft_model_name`, the initial policy and the reference), it is one LoRA fine-tuned
on the chosen answers of the training data's (chosen, rejected) pairs, for `sft_start.steps`.
It lives in `RUN/sft`, made by the step `sft` before any method fans out its preferences (so every
task finds it), resumable from its checkpoints as every SFT model; `paretohqd compare` links it into
each later run that needs it when the settings that decide it (`compare.SFT_KEYS`) agree, so a
comparison trains it once.

A method trains its own LoRA on the policy with the SFT adapter merged into the weights
(`policy.load.merge_adapter`): the new adapter is a delta on the SFT model, and disabling it gives
the SFT model back (MORLHF's KL reference, MODPO's pi_ref). `save_on_start` then writes the SFT
adapter and the delta summed exactly (rank r_sft + r), a plain adapter on the base like every
other method's model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from paretohqd.config import Config, ConfigError, PolicyConfig
from paretohqd.data.pairs import label_pairs
from paretohqd.io import read_table, write_json
from paretohqd.policy.load import write_weighted_adapters
from paretohqd.policy.sft import finetune_rows
from paretohqd.progress import console
from paretohqd.runfolder import RunFolder

FOLDER = "sft"
"""The SFT model's folder in a run, and its step's name in the manifest."""


def steps(cfg: Config) -> int:
    """The SFT model's optimizer steps: `sft_start.steps`, default train.steps."""
    return cfg.sft_start.steps or cfg.train.steps


def samples(cfg: Config) -> int:
    """Samples x steps of the SFT model (for a method's `work`)."""
    return steps(cfg) * cfg.train.batch_size


def sft_model(r: RunFolder, tokenizer, *, key: str) -> Path:
    """The run's SFT model (`RUN/sft`), trained here unless it is there already.

    Args:
        key: the setting that asked for it (`morlhf.init`, `modpo.init`), named in the error.

    Raises:
        ConfigError: the data sources have no (chosen, rejected) pairs to learn from.
    """
    cfg = r.cfg
    out = r.path(FOLDER)

    def fit() -> None:
        data = read_table(r.train_data).set_index("id")
        pairs = label_pairs(cfg.data, set(data.index))
        if pairs.empty:
            raise ConfigError(f"{key}: sft fine-tunes on the chosen answers of (chosen, rejected) pairs, and "
                              f"data.sources has none (HH or `format: pairs` sources have them); set {key}: base")
        n = steps(cfg)
        chosen = pairs.sample(n=min(len(pairs), n * cfg.train.batch_size), random_state=cfg.seed)["chosen_id"]
        console.print(f"  the SFT start: {len(chosen):,} chosen answers of {len(pairs):,} pairs, {n} steps")
        finetune_rows(cfg, tokenizer, data.loc[chosen], out, steps=n, seed=cfg.seed, **r.log_to(FOLDER))

    r.step(FOLDER, out / "train.json", fit, every_process=True)
    return out


def save_on_start(policy: PolicyConfig, start: Path, out: Path, stats: dict, save_delta: Callable[[Path], None]) -> None:
    """Save a model trained on the SFT model `start` as a plain adapter on the base: `save_delta(folder)`
    writes the trained adapter alone, then `start`'s and it, summed exactly, go to `out`
    (`write_weighted_adapters`, with `merge.json`), and `train.json` with `stats` last (the done-marker)."""
    delta = out.with_name(f".{out.name}.delta")  # the trained adapter alone, a delta on the SFT model
    save_delta(delta)
    write_weighted_adapters(policy, [start, delta], [[1.0, 1.0]], [out], meta={"train": stats})
    write_json(stats, out / "train.json")
    shutil.rmtree(delta, ignore_errors=True)
