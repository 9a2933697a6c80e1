"""Use a trained run's models: a model for any preference (`paretohqd.load`, `paretohqd generate`;
`paretohqd export` and `serve` choose their models here too).

A preference w on the run's grid gets the model trained for it. Any other w on the simplex gets
the exact mix of the trained models around it, theta = W + sum_i lambda_i dW_i, with lambda the
barycentric coordinates of w in the cell of trained preferences that contains it: for two
objectives the two neighbouring preferences; for a simplex grid (`select.preferences: 11`) the
grid's cell (the Freudenthal triangulation, which for three objectives is the grid's triangles);
for an explicit list of preferences a Delaunay triangulation of them (scipy; the cells are
`paretohqd.pareto.simplex`). A run whose one model answers every preference (RiC, `one_model`)
answers w with that model, w only changing its prompt tag (the desired rewards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd import methods
from paretohqd.config import Config, ConfigError, load_config
from paretohqd.io import InputError
from paretohqd.lock import hold
from paretohqd.pareto.simplex import TOL, barycentric, check_weights, parse_weights
from paretohqd.runfolder import FinalModel, RunFolder


# A run's model for a preference ------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What answers preference `weights`: trained models with their mixing weights, and a prompt tag."""

    weights: np.ndarray
    """(M,) the preference asked for."""
    parts: list[tuple[FinalModel, float]]
    """Trained models and lambdas (summing to 1): theta = W + sum lambda dW."""
    tag: str | None
    """RiC's desired-reward tag added to every prompt, or None."""

    @property
    def name(self) -> str:
        """`pref-03`, `mix(pref-03:0.5,pref-04:0.5)`, or for RiC (one model, a tag per preference)
        `ric(0.35,0.65)` off the grid."""
        if len(self.parts) > 1:
            return "mix(" + ",".join(f"{m.model}:{lam:.6g}" for m, lam in self.parts) + ")"
        model = self.parts[0][0]
        if np.abs(model.weights - self.weights).max() <= TOL:
            return model.model
        return "ric(" + ",".join(f"{x:.6g}" for x in self.weights) + ")"


def open_run(run: str | Path, overrides: list[str] = (), *,
             trust_remote_code: bool = False) -> tuple[RunFolder, Config, list[FinalModel]]:
    """A finished run, opened read-only (`RunFolder(read_only=True)`: nothing in it changes): its
    folder, its config with `overrides` (generate.* keys only) applied, and the method's final models.

    Args:
        trust_remote_code: the caller's consent (`--trust-remote-code`) to the run's own
            `policy.trust_remote_code: true`, which runs the model's Python code.

    Raises:
        InputError: not a run folder, a run not trained to the end, a folder replacement in it
            unfinished, or a run that trusts remote code without the caller's consent.
        ConfigError: an override of a key other than generate.*.
    """
    root = Path(run)
    if not (root / "config.yaml").exists():
        raise InputError(f"{root}: no config.yaml; give a run folder that `paretohqd run` wrote (runs/NAME)")
    bad = [o.split("=", 1)[0] for o in overrides if not o.split("=", 1)[0].strip().startswith("generate.")]
    if bad:
        raise ConfigError(f"--set {', '.join(bad)}: a trained run's settings are fixed; only generate.* keys "
                          f"(e.g. generate.max_new_tokens, generate.temperature) can change")
    cfg = methods.configure(load_config(root / "config.yaml"))
    if cfg.policy.trust_remote_code and not trust_remote_code:
        raise InputError(f"{root / 'config.yaml'} sets policy.trust_remote_code: true, which runs the Python code "
                         f"that comes with {cfg.policy.model}; if you trust it, pass --trust-remote-code "
                         f"(paretohqd.load: trust_remote_code=True)")
    r = RunFolder(cfg, root, read_only=True)  # the run's own config, so the folder check passes
    finals = methods.module(cfg).final_models(r)
    missing = [m.model for m in finals if not m.done.exists()]
    if missing:
        raise InputError(f"{root}: run not finished ({len(finals) - len(missing)} of {len(finals)} preference models "
                         f"trained; missing {', '.join(missing[:3])}); finish it with paretohqd run {root / 'config.yaml'}")
    return r, methods.configure(load_config(root / "config.yaml", list(overrides))), finals


def one_model(finals: list[FinalModel]) -> bool:
    """Whether one model answers every preference, asked by its prompt tag (RiC): every final model
    is the same folder and can tag any preference (`FinalModel.tag_for`)."""
    return len({m.adapter for m in finals}) == 1 and all(m.tag_for is not None for m in finals)


def choose(r: RunFolder, finals: list[FinalModel], weights) -> Choice:
    """The trained models (and lambdas) that answer `weights`, or the one model that answers every
    preference (`one_model`) and its tag for it.

    Raises:
        InputError: weights off the simplex or of the wrong length, or outside the trained preferences.
    """
    w = checked_weights(weights, r.objectives)
    prefs = np.array([m.weights for m in finals])  # (P, M)
    if one_model(finals):  # the preference is only its prompt tag
        near = np.abs(prefs - w).max(axis=1)  # (P,) a trained preference keeps its name
        model = finals[int(near.argmin())] if near.min() <= TOL else finals[0]
        return Choice(w, [(model, 1.0)], model.tag_for(w))
    cell = mixing_cell(prefs, w)
    if cell is None:
        raise InputError(f"weights {','.join(f'{x:g}' for x in w)} lie outside the run's trained preferences "
                         f"({len(prefs)} of them, e.g. {', '.join(','.join(f'{x:g}' for x in p) for p in prefs[:3])}); "
                         f"give weights inside their hull")
    return Choice(w, [(finals[i], lam) for i, lam in cell], None)


def checked_weights(weights, objectives: list[str]) -> np.ndarray:
    """`weights` (text `0.3,0.7`, or numbers) as a checked (M,) point of the simplex.

    Raises:
        InputError: as `pareto.simplex.parse_weights` / `check_weights` refuse (they raise ValueError:
            the numeric core names no file and exits nothing).
    """
    try:
        return parse_weights(weights, objectives) if isinstance(weights, str) else check_weights(weights, objectives)
    except ValueError as e:
        raise InputError(str(e)) from None


def mixing_cell(prefs: np.ndarray, w: np.ndarray) -> list[tuple[int, float]] | None:
    """`pareto.simplex.barycentric`: the trained preferences (P, M) and lambdas that mix to w (M,).

    Raises:
        ConfigError: the trained preferences span no cell, or scipy is missing (for an explicit list).
    """
    try:
        return barycentric(prefs, w)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass
class Loaded:
    """A run's model for one preference. Unpacks as `model, tokenizer = paretohqd.load(...)`; keeps
    the prompt tag (RiC) and the run's prompt format, which `answer` applies."""

    model: object
    tokenizer: object
    choice: Choice
    cfg: Config
    fmt: str
    """The run's prompt format (`chat` or `hh`)."""

    def __iter__(self):
        return iter((self.model, self.tokenizer))

    @property
    def tag(self) -> str | None:
        return self.choice.tag

    @property
    def name(self) -> str:
        return self.choice.name

    def answer(self, conversations: list[list[dict]], *, seed: int | None = None) -> list[str]:
        """One answer per conversation, with the run's generation settings (greedy when
        generate.temperature is 0), the tag added; in input order."""
        from paretohqd.policy.generate import generate
        from paretohqd.policy.prompts import with_tag

        if self.tag is not None:
            conversations = [with_tag(c, self.tag) for c in conversations]
        responses, _ = generate(self.model, self.tokenizer, conversations, self.cfg.generate,
                                seed=self.cfg.seed if seed is None else seed, fmt=self.fmt, label=f"{self.name} answers")
        return responses


def load(run: str | Path, weights, *, dtype: str | None = None, overrides: list[str] = (),
         trust_remote_code: bool = False) -> Loaded:
    """The model and tokenizer of a trained run for preference `weights` (see the module docstring).

    Args:
        run: the run folder (runs/NAME).
        weights: (M,) non-negative weights summing to 1, in the order of the run's objectives (or
            text such as "0.3,0.7").
        dtype: the weights' dtype; default the run's generate.dtype (`auto`: bfloat16 where native).
        overrides: generate.* settings, as `--set` takes them (for `Loaded.answer`).
        trust_remote_code: allow a run whose config trusts its model's own code (`open_run`).

    Returns:
        A `Loaded`: `model, tokenizer = load(...)`; `.tag` is RiC's prompt tag (else None),
        `.answer(conversations)` generates with it.

    Raises:
        InputError: not a finished run, or weights off the simplex / of the wrong length / outside
            the trained preferences.
        BusyError: a writer (`paretohqd run`, `evaluate`) holds the run folder.
    """
    from paretohqd.policy.generate import load_mixed
    from paretohqd.policy.load import load_tokenizer
    from paretohqd.policy.prompts import resolve_format

    with hold(run, shared=True):  # read-only; no writer changes the adapters while they load
        r, cfg, finals = open_run(run, overrides, trust_remote_code=trust_remote_code)
        choice = choose(r, finals, weights)
        model = load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in choice.parts], lora=cfg.train.lora,
                           dtype=dtype or cfg.generate.dtype)
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    return Loaded(model, tokenizer, choice, cfg, resolve_format(tokenizer, cfg.policy.prompt_format))


def generate_table(run: str | Path, weights, prompts: list[str], conversations: list[list[dict]],
                   overrides: list[str] = (), *, trust_remote_code: bool = False) -> pd.DataFrame:
    """`paretohqd generate`: the run's model for `weights` answers every conversation.

    Returns:
        Rows prompt, response, weights (list), model (`pref-XX` or `mix(...)`).
    """
    loaded = load(run, weights, overrides=overrides, trust_remote_code=trust_remote_code)
    responses = loaded.answer(conversations)
    return pd.DataFrame({"prompt": prompts, "response": responses,
                         "weights": [loaded.choice.weights.round(6).tolist()] * len(prompts),
                         "model": loaded.name})
