"""A run folder's layout and the one config it is bound to: the names of the preference models a
method hands to evaluation, and the config keys in which a config differs from the folder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from numpy.typing import ArrayLike

from paretohqd.config import Config, ConfigError, dump_config
from paretohqd.io import write_json, write_text


def pref_name(i: int) -> str:
    """The name of preference i's model and folder.

    Examples:
        >>> pref_name(3)
        'pref-03'
    """
    return f"pref-{i:02d}"


@dataclass(frozen=True)
class FinalModel:
    """One model a method hands to evaluation: a preference's finished policy."""

    model: str
    """Its name in the report (`pref-XX`)."""
    weights: np.ndarray
    """(M,) the preference it answers for."""
    adapter: Path
    """The adapter folder (or the whole model, without LoRA)."""
    done: Path
    """The file that exists once the model is finished."""
    tag: str | None = None
    """Text added to the prompt (RiC's desired rewards), or None."""
    tag_for: Callable[[ArrayLike], str | None] | None = field(default=None, compare=False, repr=False)
    """For a model that answers every preference (RiC: one model, asked by its prompt tag), the tag
    that asks it for any weights on the simplex; None for a model trained for its preference alone."""


@dataclass(frozen=True)
class Unit:
    """One unit of a run (`paretohqd plan`): a step that a scheduler may start on its own, once the
    units it needs are done (`paretohqd run CONFIG --unit ID`)."""

    id: str
    """Its name on the command line, the same in every call (`stage1/pref-03`)."""
    step: str
    """Its step's name in the manifest (`stage1/pref-03 w=[0.3, 0.7]`)."""
    wave: str
    """Its group of units that may all run at once (`stage1`): a job array."""
    needs: tuple[str, ...]
    """The ids of the units whose outputs it reads."""
    kind: str | None
    """`train` or `generate` (its resources: `executor.train` / `executor.generate`), or None: a
    light step (data, scoring, selection, the report)."""
    done: Path
    """The file that exists once it finished."""
    folder: Path | None = None
    """The folder it alone writes (a model's), if any."""


def bind_config(cfg: Config, root: Path, state: PartialState, *, free: tuple[str, ...] = (),
                read_only: bool = False) -> None:
    """Check that `root` holds `cfg`'s outputs (or none yet) and, unless `read_only`, write its
    `config.yaml` and `seed.json` there (main process; the others wait for it).

    A run folder holds one config: mixing outputs of two configs would report nonsense.

    Raises:
        ConfigError: the folder was made with another config (the keys that differ are named).
    """
    keys = config_differences(cfg, root, free=free)
    if keys:
        raise ConfigError(f"{root} was made with another config (differs in: {', '.join(keys)}); "
                          f"resume with the same config, or start a new run with --set name=NEW")
    if read_only:
        return
    # every process checks (so all stop on a mismatch); the main one writes, the others wait for it
    if state.is_main_process:
        write_text(dump_config(cfg), root / "config.yaml")
        write_json({"seed": cfg.seed, "torch": torch.__version__, "processes": state.num_processes},
                   root / "seed.json")
    state.wait_for_everyone()


def config_differences(cfg: Config, root: Path, *, free: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys in which `cfg` differs from the config a run folder was made with (none for a
    new folder). Keys a newer paretohqd added (absent from the old file) take their defaults: no change.
    Keys of the `free` sections never count, nor those of `compare` and `executor`: sections the run's
    method does not read (`methods.unread_sections`: a ParetoHqD run ignores `morlhf`), the list of
    runs a comparison makes, where the steps run (`executor`) and the LLM judge (`evaluate.judge`): so tuning one
    baseline, adding a method, resuming on a cluster or changing the judge keeps every other finished run."""
    path = Path(root) / "config.yaml"
    text = dump_config(cfg)
    if not path.is_file():
        return []
    import yaml

    try:
        stored = path.read_text()
        if stored == text:
            return []
        old = yaml.safe_load(stored)
        if not isinstance(old, dict):
            raise ValueError("not a mapping of sections")
    except (ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path} cannot be read ({str(e).splitlines()[0][:120]}); it is the config this run was "
                          "made with: restore it, or delete it to take the config you gave") from None
    old, new = _flatten(old), _flatten(yaml.safe_load(text))
    free = ("compare", "executor", *free)
    # the judge's settings change no output of the run: its verdicts are cached by judge and prompt
    return sorted(k for k in old if old[k] != new.get(k) and k.split(".")[0] not in free
                  and not k.startswith("evaluate.judge."))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
