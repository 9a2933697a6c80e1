"""What a method module offers `METHODS` (`MethodModule`, checked by `problems`), and what methods
share: their final models, one per preference (`per_preference`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from paretohqd.config import Config
from paretohqd.runfolder import FinalModel, RunFolder, Unit, pref_name


class MethodModule(Protocol):
    """A method module's functions (a module satisfies a Protocol by its attributes, PEP 544)."""

    def train(self, r: RunFolder, tokenizer) -> None:
        """Every training step, each recorded in the run folder's manifest."""

    def final_models(self, r: RunFolder) -> list[FinalModel]:
        """The models to evaluate, one per preference."""

    def describe(self, cfg: Config) -> str:
        """One line naming the method and its budget, for reports."""

    def work(self, cfg: Config, n_samples: int | None = None) -> dict[str, float]:
        """Counts of work (`budget.py` turns them into time); `n_samples`, the scored training set's
        size once known, for methods whose work grows with it; `models` is always among them."""


class MayOffer(Protocol):
    """What a method module may offer too (`methods.several_processes`, `preflight.preflight`,
    `units.run_units`)."""

    def check(self, cfg: Config) -> list[str]:
        """Problems with its settings, reported before anything runs."""

    def several_processes(self, cfg: Config) -> bool:
        """Whether it trains under a launcher's process group (default: it can)."""

    def units(self, cfg: Config, root: Path) -> list[Unit]:
        """Its steps as units a scheduler may start one by one (`paretohqd plan`); without it a
        run of the method runs whole."""


def problems(module: ModuleType) -> list[str]:
    """What `module` lacks of `MethodModule`, or offers with other parameters (of `MayOffer` too,
    where it offers them); [] for a method module.

    Examples:
        >>> import types
        >>> [p.split()[0] for p in problems(types.ModuleType("empty"))]
        ['empty.describe', 'empty.final_models', 'empty.train', 'empty.work']
        >>> problems(types.ModuleType("empty"))[2]
        'empty.train is missing: a method module offers train(r, tokenizer)'
    """
    out = []
    for protocol, required in ((MethodModule, True), (MayOffer, False)):
        for name, want in inspect.getmembers(protocol, inspect.isfunction):
            if name.startswith("_"):
                continue
            expected = [p for p in inspect.signature(want).parameters if p != "self"]
            fn = getattr(module, name, None)
            if fn is None:
                if required:
                    out.append(f"{module.__name__}.{name} is missing: a method module offers "
                               f"{name}({', '.join(expected)})")
            elif not callable(fn) or list(inspect.signature(fn).parameters) != expected:
                out.append(f"{module.__name__}.{name} must take ({', '.join(expected)})")
    return out


def per_preference(r: RunFolder, folder: str, preferences: np.ndarray, record: str = "train.json") -> list[FinalModel]:
    """One model per preference (P, M), in `RUN/folder/pref-XX`, finished once its `record` exists."""
    return [FinalModel(pref_name(i), w, r.path(folder, pref_name(i)), r.path(folder, pref_name(i), record))
            for i, w in enumerate(preferences)]
