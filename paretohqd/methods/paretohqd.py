"""ParetoHqD (arXiv 2504.16628) and its ablations: select -> stage 1 -> stage 2.

- Stage 1: from the scored data's top Pareto layers, each preference takes the k points nearest
  its ray (`paretohqd.select`) and fine-tunes one model on them.
- Stage 2: the M + 1 representative stage-1 models (`representatives`) answer `stage2.prompts`
  training prompts; the answers are scored, selected again (k/2 per preference), and each
  preference's stage-1 adapter trains on its new samples.

The ablations are settings (see `paretohqd.methods.METHODS`): `stage1-only` turns stage 2 off,
`scalarised` selects the top k of w . z, `full-data` draws uniformly from the whole set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import Config
from paretohqd.data.prepare import sample_id
from paretohqd.io import read_table, write_parquet
from paretohqd.methods.contract import per_preference
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.generate import answer
from paretohqd.policy.sft import finetune_rows
from paretohqd.progress import console
from paretohqd.rewards.score import write_scores
from paretohqd.runfolder import FinalModel, RunFolder, Unit, pref_name
from paretohqd.select import write_selection


def representatives(preferences: np.ndarray) -> list[int]:
    """Indices of the M + 1 stage-2 generators: the preference nearest each vertex, then the one
    nearest the uniform weights (the balanced model).

    Examples:
        >>> representatives(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.4, 0.6]]))
        [2, 0, 1]
    """
    m = preferences.shape[1]
    targets = list(np.eye(m)) + [np.full(m, 1.0 / m)]
    picks = [int(np.argmin(np.linalg.norm(preferences - t, axis=1))) for t in targets]
    return list(dict.fromkeys(picks))


def budget(cfg: Config, steps: int, k: int, n: int) -> tuple[int, int]:
    """(samples drawn per preference, optimizer steps) of a stage that ParetoHqD runs for `steps`
    steps on `k` samples, with `n` samples to choose from. Only `select.method: random` with
    `select.random_budget: epochs` differs: all n samples, for the epochs ParetoHqD gives its k.

    Examples:
        >>> budget(Config(), 200, 100, 10_000)  # ParetoHqD: k samples, `steps` steps
        (1600, 200)
        >>> budget(Config(select={"method": "random", "random_budget": "epochs"}), 200, 100, 10_000)
        (10000, 20000)
    """
    b = cfg.train.batch_size
    if cfg.select.method == "random" and cfg.select.random_budget == "epochs":
        return n, -(-steps * b * n // (k * b))  # steps * b / k epochs over n samples, rounded up
    return steps * b, steps


def train(r: RunFolder, tokenizer) -> None:
    """Selection, stage 1 and, unless it is off, stage 2."""
    cfg = r.cfg
    random_n, steps = budget(cfg, cfg.train.steps, cfg.select.k, len(read_table(r.scores)))
    r.step("select", r.path("stage1", "selection.parquet"),
           lambda: write_selection(cfg, r.scores, r.path("stage1"), k=cfg.select.k, random_n=random_n))
    _train_stage(r, tokenizer, "stage1", r.scores, steps)
    if cfg.stage2.enabled:
        _stage2(r, tokenizer)


def _stage2(r: RunFolder, tokenizer) -> None:
    cfg = r.cfg
    k2 = cfg.stage2.k or max(cfg.select.k // 2, 1)
    prompts = read_table(r.train_data).drop_duplicates("prompt")
    n = min(cfg.stage2.prompts, len(prompts))
    if n < cfg.stage2.prompts:
        console.print(f"[yellow]stage2.prompts = {cfg.stage2.prompts:,} but the data holds {n:,} distinct "
                      f"training prompts: using all of them[/]")
    prompts = prompts.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    reps = representatives(r.preferences)
    pools = []
    with r.fan_out("generate"):  # the representatives answer independently (one task each under `executor: ray`)
        for j, i in enumerate(reps):
            # each representative answers every sampled prompt, or its own slice of them
            mine = prompts if cfg.stage2.prompts_per == "model" else prompts.iloc[j::len(reps)]
            pool = r.path(_POOL.format(pref_name(i)))
            pools.append(pool)
            r.step(f"stage2/generate {pref_name(i)}", pool,
                   lambda i=i, pool=pool, mine=mine: _generate_pool(r, tokenizer, mine, i, pool), spread=True)

    scores = r.path("stage2", "scores.parquet")

    def score_pool() -> None:
        df = pd.concat([read_table(p) for p in pools], ignore_index=True).drop_duplicates("id")
        write_scores(cfg, df, scores, ranks=r.ranks)

    r.step("stage2/score", scores, score_pool, spread=True)
    random_n, steps = budget(cfg, cfg.stage2.steps, k2, len(read_table(scores)))
    r.step("stage2/select", r.path("stage2", "selection.parquet"),
           lambda: write_selection(cfg, scores, r.path("stage2"), k=k2, random_n=random_n))
    _train_stage(r, tokenizer, "stage2", scores, steps, init_stage="stage1")


def _generate_pool(r: RunFolder, tokenizer, prompts: pd.DataFrame, index: int, out: Path) -> None:
    # saved batch by batch beside the pool: a kill loses one batch, not the pool (10,000 answers in the paper)
    cfg, adapter = r.cfg, r.path("stage1", pref_name(index))
    saved = out.with_name(f".{out.stem}.batches")
    responses = answer(cfg, tokenizer, [list(m) for m in prompts["messages"]], adapter, seed=cfg.seed + index,
                       label=f"pref {index:02d} answers", saved=saved, ranks=r.ranks)
    if not r.ranks.main:  # every process answered its share; the main one writes
        return
    df = prompts[["prompt", "messages"]].assign(response=responses, source=f"stage1:{pref_name(index)}",
                                                 preference_index=index, model=str(adapter))
    df = df[df["response"].str.len() > 0]
    df.insert(0, "id", [sample_id(p, r) for p, r in zip(df["prompt"], df["response"])])
    write_parquet(df, out)
    shutil.rmtree(saved, ignore_errors=True)


def _train_stage(r: RunFolder, tokenizer, stage: str, scores_path, steps: int, init_stage: str | None = None) -> None:
    """One model per preference on its selection; stage 2 continues from the stage-1 adapters."""
    with r.fan_out("train"):  # the models are independent (one task each under `executor: ray`)
        for i, w in enumerate(r.preferences):
            out = r.path(stage, pref_name(i))
            init = r.path(init_stage, pref_name(i)) if init_stage else None

            def fit(i=i, out=out, init=init) -> None:
                scores = read_table(scores_path).set_index("id")
                selection = read_table(r.path(stage, "selection.parquet"))
                rows = scores.loc[selection.loc[selection["preference_index"] == i, "id"]]
                finetune_rows(r.cfg, tokenizer, rows, out, steps=steps, seed=r.cfg.seed + i, init_adapter=init,
                              **r.log_to(f"{stage}/{pref_name(i)}"))

            r.step(_model_step(stage, i, w), out / "train.json", fit, every_process=True)


_POOL = "stage2/generated-{}.parquet"  # a representative's stage-2 answers, by its model's name


def _model_step(stage: str, i: int, w: np.ndarray) -> str:
    # the preference's weights in the name, for the reader of the manifest and its times table
    return f"{stage}/{pref_name(i)} w={w.round(3).tolist()}"


def units(cfg: Config, root: Path) -> list[Unit]:
    """The steps of `train` as units (`paretohqd plan`), in the order `train` runs them: selection,
    one model per preference, then (stage 2) one answer pool per representative, the pools'
    scores and selection, and one model per preference again. The selection needs the run's
    scored data (its `score` unit, which `units.run_units` adds)."""
    prefs = preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))  # (P, M)

    def models(stage: str, needs: tuple[str, ...]) -> list[Unit]:
        return [Unit(f"{stage}/{pref_name(i)}", _model_step(stage, i, w), stage,
                     (*needs, *([f"stage1/{pref_name(i)}"] if stage == "stage2" else [])), "train",
                     root / stage / pref_name(i) / "train.json", root / stage / pref_name(i))
                for i, w in enumerate(prefs)]

    out = [Unit("select", "select", "select", (), None, root / "stage1" / "selection.parquet"), *models("stage1", ("select",))]
    if not cfg.stage2.enabled:
        return out
    pools = [Unit(f"stage2/generate {pref_name(i)}", f"stage2/generate {pref_name(i)}", "stage2-generate",
                  (f"stage1/{pref_name(i)}",), "generate", root / _POOL.format(pref_name(i))) for i in representatives(prefs)]
    return [*out, *pools,
            Unit("stage2/score", "stage2/score", "stage2-score", tuple(u.id for u in pools), "generate",
                 root / "stage2" / "scores.parquet"),
            Unit("stage2/select", "stage2/select", "stage2-select", ("stage2/score",), None,
                 root / "stage2" / "selection.parquet"),
            *models("stage2", ("stage2/select",))]


def final_models(r: RunFolder) -> list[FinalModel]:
    """Each preference's stage-2 model if stage 2 ran, else its stage-1 model."""
    return per_preference(r, "stage2" if r.cfg.stage2.enabled else "stage1", r.preferences)


def describe(cfg: Config) -> str:
    stages = "stage 1 + 2" if cfg.stage2.enabled else "stage 1 only"
    if cfg.select.method == "random":
        return f"ParetoHqD without Pareto data (uniform random training samples, {stages})"
    return f"ParetoHqD ({cfg.select.method} selection, {stages}, k={cfg.select.k})"


def work(cfg: Config, n_samples: int | None = None) -> dict[str, float]:
    """Samples x steps trained (stage 1 separately, since `compare` can share it), tokens generated
    (stage 2, counted at max_new_tokens) by its `generators` (the representatives) and the number of
    models evaluated. `n_samples`, the scored
    training set's size, matters only to `select.random_budget: epochs` (NaN counts without it)."""
    prefs = preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))  # (P, M)
    b = cfg.train.batch_size
    stage1 = len(prefs) * b * budget(cfg, cfg.train.steps, cfg.select.k, n_samples or 0)[1]
    if n_samples is None and cfg.select.method == "random" and cfg.select.random_budget == "epochs":
        stage1 = float("nan")
    stage2 = generated = 0
    generators = len(representatives(prefs)) if cfg.stage2.enabled else 0
    if cfg.stage2.enabled:
        answers = cfg.stage2.prompts * (generators if cfg.stage2.prompts_per == "model" else 1)
        generated = answers * cfg.generate.max_new_tokens
        # the pool: every representative's answers (at most; empty answers and duplicates drop out)
        stage2 = len(prefs) * b * budget(cfg, cfg.stage2.steps, cfg.stage2.k or max(cfg.select.k // 2, 1), answers)[1]
    return {"train_samples": stage1 + stage2, "stage1_samples": stage1, "generated_tokens": generated,
            "generators": generators, "models": len(prefs)}
