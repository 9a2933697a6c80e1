"""A served run's model names, the weights behind each, and the cache of loaded models and mixes."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from pathlib import Path

import numpy as np

from paretohqd.io import InputError
from paretohqd.serve.limits import WEIGHT_GRID
from paretohqd.serve.protocol import APIError
from paretohqd.use import checked_weights, choose, open_run

BASE = "base"
"""The model name of the policy before training."""


def open_served(run: str | Path, *, trust_remote_code: bool = False):
    """The finished run a server answers from: (RunFolder, config, final models). The one place
    serve opens the run folder (read-only, `open_run`).

    Raises:
        InputError: not a finished run, or one that trusts remote code without `trust_remote_code`.
    """
    return open_run(run, trust_remote_code=trust_remote_code)


def on_grid(w: np.ndarray) -> np.ndarray:
    """(M,) simplex weights rounded to `WEIGHT_GRID`, still summing to 1 (the largest takes the
    rounding's remainder): near-identical preferences become one.

    Examples:
        >>> on_grid(np.array([0.25004, 0.74996])).tolist()
        [0.25, 0.75]
        >>> on_grid(np.array([1, 1, 1]) / 3).tolist()
        [0.334, 0.333, 0.333]
    """
    steps = round(1 / WEIGHT_GRID)
    n = np.rint(np.asarray(w, dtype=np.float64) * steps).astype(np.int64)  # (M,)
    n[int(np.argmax(n))] += steps - n.sum()
    return n / steps


class Models:
    """A run's names and the weights behind them, and an LRU cache of loaded models."""

    def __init__(self, run: str | Path, *, cache_size: int = 4, dtype: str | None = None,
                 trust_remote_code: bool = False):
        self.run, self.cache_size = Path(run), cache_size
        self.r, self.cfg, self.finals = open_served(run, trust_remote_code=trust_remote_code)
        self.dtype = dtype or self.cfg.generate.dtype
        self.names = [m.model for m in self.finals] + [BASE]
        self._cache: OrderedDict[tuple | str, object] = OrderedDict()
        """Without LoRA: weights -> merged model; with LoRA: mixed weights -> adapter name."""
        self._model, self._names, self._mixes = None, {}, itertools.count()
        self.peak = 0
        """The most models (without LoRA) or mixes (with LoRA) held at once."""

    def resolve(self, name: str) -> tuple[str, tuple | str, str | None]:
        """A request's `model` as (the name answers report, the weights to load, RiC's tag or None).
        `w=` weights are rounded to `WEIGHT_GRID` first.

        Raises:
            APIError: 404 for an unknown name, 400 for bad `w=` weights.
        """
        if name == BASE:
            return BASE, BASE, None
        if name.startswith("w="):
            try:
                choice = choose(self.r, self.finals, on_grid(checked_weights(name[2:], self.r.objectives)))
            except InputError as e:
                raise APIError(400, f"model {name!r}: {e}", param="model", code="invalid_weights") from None
        else:
            known = {m.model: m for m in self.finals}
            if name not in known:
                raise APIError(404, f"The model {name!r} does not exist; this run serves {', '.join(self.names)}, "
                               f"or any preference as w=W1,W2,... (objectives {', '.join(self.r.objectives)})",
                               param="model", code="model_not_found")
            choice = choose(self.r, self.finals, known[name].weights)
        weights = tuple((str(m.adapter), float(lam)) for m, lam in choice.parts)
        return choice.name, weights, choice.tag

    def slot(self, weights: tuple | str) -> tuple | str | None:
        """The cache entry `weights` takes (None: none, it is always loaded): with LoRA each mix,
        without LoRA each model. A batch uses at most `cache_size` of them, so none is evicted
        while its batch runs and the cache never holds more."""
        if not self.cfg.train.lora:
            return weights
        return weights if weights != BASE and len(weights) > 1 else None

    def get(self, weights: list[tuple | str]) -> tuple[object, list[str] | None]:
        """The model that answers every one of `weights` (worker thread only), and with a LoRA run
        each one's adapter name.

        A LoRA run is one model: the base with every trained adapter, and the mixes asked for
        added as adapters (the last `cache_size` used are kept), so rows of one batch can use
        different preferences. Without LoRA, one merged model per preference (the last
        `cache_size` used are kept), and `weights` must all be the same.
        """
        if self.cfg.train.lora:
            return self._shared(), [self._adapter(w, keep=set(weights)) for w in weights]
        from paretohqd.policy.generate import load_for_generation, load_mixed

        (key,) = set(weights)
        if key not in self._cache:
            self._evict(keep={key}, room=1)  # before loading: the memory of one model less at a time
            if key == BASE:
                self._cache[key] = load_for_generation(self.cfg.policy, None, lora=False, dtype=self.dtype)
            else:  # what paretohqd.load does with the choice, without reopening the run or the tokenizer
                self._cache[key] = load_mixed(self.cfg.policy, [(Path(a), lam) for a, lam in key], lora=False,
                                              dtype=self.dtype)
            self.peak = max(self.peak, len(self._cache))
        self._evict(keep={key})
        return self._cache[key], None

    def _shared(self):
        from paretohqd.policy.generate import load_adapters

        if self._model is None:
            folders = dict.fromkeys(str(m.adapter) for m in self.finals)  # RiC: one folder for all
            self._names = {folder: f"trained-{i}" for i, folder in enumerate(folders)}
            self._model = load_adapters(self.cfg.policy, {n: f for f, n in self._names.items()}, dtype=self.dtype)
        return self._model

    def _adapter(self, weights: tuple | str, keep: set) -> str:
        from paretohqd.policy.generate import add_mix

        if weights == BASE:
            return "__base__"  # PEFT's name for no adapter
        if len(weights) == 1:
            return self._names[weights[0][0]]
        if weights not in self._cache:
            self._evict(keep, room=1)
            name = f"mix-{next(self._mixes)}"
            add_mix(self._model, [(self._names[a], lam) for a, lam in weights], name)
            self._cache[weights] = name
            self.peak = max(self.peak, len(self._cache))
        self._evict(keep)
        return self._cache[weights]

    def _evict(self, keep: set, room: int = 0) -> None:
        """Forget the least recently used beyond `cache_size` (less `room` for ones about to be
        added), except those in `keep` (this batch)."""
        for key in keep:
            if key in self._cache:
                self._cache.move_to_end(key)
        over = len(self._cache) + room - self.cache_size
        for key in [k for k in self._cache if k not in keep][:max(0, over)]:
            gone = self._cache.pop(key)
            if self.cfg.train.lora:
                self._model.delete_adapter(gone)
