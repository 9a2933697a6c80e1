"""`paretohqd evaluate RUN --interpolation`: how well a mix of trained neighbours stands in for a
trained preference model.

It lives beside `use` and `export`, not in `evaluate`: it opens the finished run and chooses its
models as `paretohqd.load` does (`use.open_run`, `use.Choice`), which asks the method for its final
models, and `methods` sits above `evaluate` in the layers (pyproject's import-linter contract).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import Config
from paretohqd.io import InputError, read_table, write_json
from paretohqd.runfolder import FinalModel
from paretohqd.use import Choice, mixing_cell, one_model, open_run


def interpolation_quality(run: str | Path) -> dict:
    """`paretohqd evaluate RUN --interpolation`: how well a mix of trained neighbours stands in for
    a trained preference model.

    Each trained preference that the others surround is left out and rebuilt from them (the cell
    `choose` would pick without it: for two objectives its two neighbours), and that mix answers
    the run's held-out prompts with the evaluation's settings and seed. Its rewards are compared
    prompt by prompt with the trained model's answers in `evaluate/responses.parquet`: the same
    prompts and the same random stream (common random numbers), so the paired differences carry
    the mix's effect, not the sampling noise of two independent draws. The neighbours' own
    spread is given beside it as the scale a difference should be read against.

    Writes `evaluate/interpolation/<model>.parquet` (each left-out model's mixed answers, scored;
    resumable per model) and `evaluate/interpolation.json`, which the report shows.

    Returns:
        The content of `interpolation.json`.

    Raises:
        InputError: a RiC run (one model: nothing to mix), a run not evaluated yet, or no trained
            preference with trained neighbours on both sides.
    """
    from paretohqd.evaluate.answer import heldout_prompts
    from paretohqd.evaluate.front import LEVEL
    from paretohqd.policy.load import load_tokenizer
    from paretohqd.policy.prompts import resolve_format

    # `evaluate` runs the run's own config, as `paretohqd run` did (its remote code included)
    r, cfg, finals = open_run(run, trust_remote_code=True)
    if one_model(finals):
        raise InputError(f"{r.root}: a RiC run trains one model for every preference; there is nothing to interpolate")
    evaluated = r.path("evaluate", "responses.parquet")
    if not evaluated.exists():
        raise InputError(f"{evaluated}: no such file; evaluate the run first (paretohqd evaluate {r.root})")
    trained_answers = read_table(evaluated)
    left_out = _left_out(finals)
    if not left_out:
        raise InputError(f"{r.root}: no trained preference lies between other trained ones "
                         f"({len(finals)} preferences); train at least 3 (select.preferences >= 3)")
    prompts = heldout_prompts(r.root, cfg.evaluate.prompts)
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
    rows = []
    for model, parts in left_out:
        choice = Choice(model.weights, parts, None)
        path = r.path("evaluate", "interpolation", f"{model.model}.parquet")
        _write_mixed_answers(cfg, tokenizer, fmt, prompts, choice, path)
        trained_df = trained_answers[trained_answers["model"] == model.model].set_index("prompt_id")
        mixed_df = read_table(path).set_index("prompt_id")
        common = [p for p in prompts["prompt_id"] if p in trained_df.index and p in mixed_df.index]
        if len(common) != len(prompts):
            raise InputError(f"{evaluated}: {model.model} answered {len(common)} of the {len(prompts)} held-out "
                             f"prompts; re-evaluate the run (delete {r.path('evaluate')} and run paretohqd evaluate {r.root})")
        neighbours = np.array([trained_answers.loc[trained_answers["model"] == m.model, r.objectives].mean().to_numpy()
                               for m, _ in parts])  # (K, M)
        rows.append(_row(cfg, r.objectives, model, choice, trained_df.loc[common], mixed_df.loc[common], neighbours))
    out = {"objectives": r.objectives, "prompts": len(prompts), "seed": cfg.seed, "bootstrap": cfg.evaluate.bootstrap,
           "level": LEVEL, "rows": rows}
    write_json(out, r.path("evaluate", "interpolation.json"))
    return out


def _left_out(finals: list[FinalModel]) -> list[tuple[FinalModel, list[tuple[FinalModel, float]]]]:
    """Each trained model that the others surround, with the cell of the others (and lambdas) that
    mixes to its preference."""
    prefs = np.array([m.weights for m in finals])  # (P, M)
    left_out = []
    for i in range(len(finals)):
        others = [j for j in range(len(finals)) if j != i]
        cell = mixing_cell(prefs[others], prefs[i])
        if cell is not None:
            left_out.append((finals[i], [(finals[others[j]], lam) for j, lam in cell]))
    return left_out


def _write_mixed_answers(cfg: Config, tokenizer, fmt: str, prompts: pd.DataFrame, choice: Choice, path: Path) -> None:
    """The mix's answers to the held-out prompts, scored, at `path` (skipped when there: resumable)."""
    from paretohqd.data.prepare import sample_id
    from paretohqd.policy.generate import generate, load_mixed
    from paretohqd.progress import console
    from paretohqd.rewards.score import write_scores

    if path.exists():
        console.print(f"[dim]skip {path.stem} (mixed answers on disk)[/]")
        return
    mixed = load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in choice.parts], lora=cfg.train.lora,
                       dtype=cfg.generate.dtype)
    # the seed `evaluate` gave every model: the trained model's answers drew the same stream
    responses, _ = generate(mixed, tokenizer, [list(c) for c in prompts["messages"]], cfg.generate,
                            seed=cfg.seed, fmt=fmt, label=f"{choice.name} answers")
    df = prompts[["prompt_id", "prompt"]].assign(model=choice.name, response=responses)
    df.insert(0, "id", [sample_id(p, a) for p, a in zip(df["prompt"], df["response"])])
    write_scores(cfg, df, path)


def _row(cfg: Config, names: list[str], model: FinalModel, choice: Choice, trained_df: pd.DataFrame,
         mixed_df: pd.DataFrame, neighbours: np.ndarray) -> dict:
    """One left-out model's row of `interpolation.json`: the trained and mixed answers' mean rewards
    on the same prompts (rows in the same order), their paired difference with its bootstrap
    interval, the neighbours' (K, M) mean rewards' spread, and both collapse rates."""
    from paretohqd.evaluate.collapse import collapse_reasons
    from paretohqd.evaluate.front import bootstrap_mean

    a = trained_df[names].to_numpy(dtype=np.float64)  # (n, M)
    b = mixed_df[names].to_numpy(dtype=np.float64)  # (n, M)
    diff, lo, hi = bootstrap_mean(b - a, n_resamples=cfg.evaluate.bootstrap, seed=cfg.seed)
    return {
        "left_out": model.model, "weights": np.round(model.weights, 6).tolist(), "mix": choice.name,
        "mixed_from": {m.model: lam for m, lam in choice.parts},
        "trained": dict(zip(names, a.mean(axis=0).tolist())), "mixed": dict(zip(names, b.mean(axis=0).tolist())),
        "difference": dict(zip(names, diff.tolist())),
        "ci95": {o: [None if np.isnan(x) else float(x), None if np.isnan(y) else float(y)]
                 for o, x, y in zip(names, lo, hi)},
        "neighbour_spread": dict(zip(names, (neighbours.max(axis=0) - neighbours.min(axis=0)).tolist())),
        "collapse_rate": {"trained": float(trained_df["collapse"].notna().mean()),
                          "mixed": float(pd.Series(collapse_reasons(mixed_df["response"])).notna().mean())},
    }
