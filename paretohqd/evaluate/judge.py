"""`paretohqd judge RUN` (and `evaluate.judge.enabled` at the end of `run` / `compare`): an LLM
judge compares each preference model's evaluation answers with a reference's on the same prompts.

For each preference model, prompt and aspect (the preference: every objective's criterion with its
weight; and, with `per_objective`, each objective alone) the judge is asked twice, with the model's
answer shown first (A) and second (B); `winrate.combine_orders` makes the prompt's outcome and
`winrate.win_rates` the rates with bootstrap intervals over prompts. The reference (`against`) is
the run's base model, or the model of the same preference in another evaluated run.

Outputs, in RUN/judge/ (beside evaluate/, not in it: the evaluate step owns that folder's files):

- `vs-REF.parquet`: every verdict, keyed by prompt_id, model, reference, aspect, order, judge,
  template (hash of the judge prompt's fixed text) and answers (hash of the two answers), with the
  reply, its token counts and requests. Written atomically as verdicts arrive: a killed judge
  resumes, asking only what is not in it. Delete it to ask again.
- `vs-REF--JUDGE.json`: the rates (per preference model and aspect), the counts, tokens and cost,
  read by the report.

The run is read (its evaluate/ files) and only RUN/judge/ is written; the caller holds the run's
writer lock (`lock.hold`), and a reference run is held as a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import JudgeConfig
from paretohqd.data.transcript import to_messages
from paretohqd.evaluate.judge_api import INVALID, Judge, Reply
from paretohqd.evaluate.winrate import combine_orders, win_rates
from paretohqd.io import InputError, read_table, write_json, write_parquet
from paretohqd.lock import hold
from paretohqd.progress import console

PREFERENCE = "preference"
"""The aspect that states the model's preference (all objectives, weighted)."""
KEY = ["prompt_id", "model", "reference", "aspect", "order", "judge", "template", "answers"]
"""What identifies one verdict in the cache."""
_FLUSH_ROWS, _FLUSH_S = 64, 10.0  # write the cache after this many new verdicts or seconds
_SCORE = {"first": {"A": 1, "B": -1, "tie": 0}, "second": {"A": -1, "B": 1, "tie": 0}}  # verdict -> model's outcome


# The pairs ---------------------------------------------------------------------------------------


def _responses(root: Path) -> tuple[pd.DataFrame, dict]:
    path = root / "evaluate" / "responses.parquet"
    meta = root / "evaluate" / "meta.json"
    if not path.exists() or not meta.exists():
        raise InputError(f"{root}: no evaluated answers ({path.relative_to(root)} / meta.json missing); "
                         f"run `paretohqd evaluate {root}` first")
    df = read_table(path)
    missing = {"model", "preference_index", "weights", "prompt_id", "prompt", "response"} - set(df.columns)
    if missing:
        raise InputError(f"{path} lacks column(s) {sorted(missing)}; rerun `paretohqd evaluate {root}`")
    return df.drop_duplicates(["model", "prompt_id"]), json.loads(meta.read_text())


def reference_label(root: Path, against: str) -> str:
    """`base`, or the other run's folder name; checks that `against` is one of them.

    Raises:
        InputError: `against` is neither `base` nor an evaluated run folder, or is RUN itself.
    """
    if against == "base":
        return "base"
    other = Path(against)
    if not (other / "evaluate" / "responses.parquet").is_file():
        raise InputError(f"--against {against!r} (evaluate.judge.against): neither `base` nor an evaluated run "
                         "folder (with evaluate/responses.parquet); give base or another run's folder")
    if other.resolve() == root.resolve():
        raise InputError(f"--against {against!r} is the judged run itself; give base or another run's folder")
    return other.name


def pairs(root: Path, against: str, n_prompts: int | None) -> tuple[pd.DataFrame, dict]:
    """One row per (preference model, prompt) with both answers: model, weights, prompt_id,
    prompt, response, reference, reference_response; and the run's meta.json.

    Raises:
        InputError: no answers, an unknown reference, or no prompt the two share.
    """
    df, meta = _responses(root)
    label = reference_label(root, against)
    prompt_ids = df["prompt_id"].drop_duplicates().head(n_prompts)  # the first n, as the report's samples
    prefs = df[(df["preference_index"] >= 0) & df["prompt_id"].isin(prompt_ids)]
    if against == "base":
        ref = df[df["preference_index"] < 0][["prompt_id", "response"]].assign(reference="base")
        merged = prefs.merge(ref.rename(columns={"response": "reference_response"}), on="prompt_id")
    else:
        other, _ = _responses(Path(against))
        other = other[other["preference_index"] >= 0]
        key = lambda w: tuple(np.round(np.asarray(w, dtype=float), 6))  # noqa: E731 - weights as a join key
        ref = pd.DataFrame({"prompt_id": other["prompt_id"], "wkey": other["weights"].map(key),
                            "reference": label + "/" + other["model"], "reference_response": other["response"]})
        merged = prefs.assign(wkey=prefs["weights"].map(key)).merge(ref, on=["prompt_id", "wkey"]).drop(columns="wkey")
        unmatched = sorted(set(prefs["model"]) - set(merged["model"]))
        if unmatched:
            console.print(f"[yellow]{label} has no model of the preference of {', '.join(unmatched)}: not judged[/]")
    if merged.empty:
        raise InputError(f"{root} and {against} share no (preference, prompt) to compare; judge runs evaluated "
                         "on the same prompts (and, against another run, with the same preferences)")
    cols = ["model", "weights", "prompt_id", "prompt", "response", "reference", "reference_response"]
    return merged[cols].sort_values(["model", "prompt_id"], kind="stable").reset_index(drop=True), meta


# The judge's prompts -----------------------------------------------------------------------------


def criteria(cfg: JudgeConfig, objectives: list[str], aspect: str, weights: list[float]) -> str:
    """What the judge compares for `aspect`: one objective's criterion, or (`PREFERENCE`) the
    weighting line and every objective's criterion with its weight.

    Raises:
        InputError: an objective without a criterion in `evaluate.judge.criteria`.
    """
    missing = [o for o in objectives if o not in cfg.criteria]
    if missing:
        raise InputError(f"evaluate.judge.criteria has no criterion for objective(s) {', '.join(missing)}; add one "
                         "each (--set evaluate.judge.criteria.NAME='...': what the judge should compare)")
    if aspect != PREFERENCE:
        return cfg.criteria[aspect]
    return "\n".join([cfg.weighting, *(f"- {o} (weight {w:.2f}): {cfg.criteria[o]}" for o, w in zip(objectives, weights))])


def judge_prompt(cfg: JudgeConfig, criterion: str, prompt: str, answer_a: str, answer_b: str) -> str:
    """The template filled (plain replacement: braces in answers or criteria stay as they are)."""
    conversation = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in to_messages(prompt)) or prompt
    text = cfg.template.replace("{criteria}", criterion).replace("{conversation}", conversation)
    return text.replace("{answer_a}", answer_a).replace("{answer_b}", answer_b)


def _hash(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def tasks(cfg: JudgeConfig, table: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Every request to make: the `KEY` columns and the filled judge prompt (`text`)."""
    aspects = [PREFERENCE, *(objectives if cfg.per_objective else [])]
    rows = []
    for p in table.itertuples(index=False):
        answers = _hash(p.response, p.reference_response)
        for aspect in aspects:
            criterion = criteria(cfg, objectives, aspect, list(p.weights))
            template = _hash(cfg.template, criterion)
            for order, (a, b) in (("first", (p.response, p.reference_response)),
                                  ("second", (p.reference_response, p.response))):
                rows.append((p.prompt_id, p.model, p.reference, aspect, order, cfg.model, template, answers,
                             judge_prompt(cfg, criterion, p.prompt, a, b)))
    return pd.DataFrame(rows, columns=[*KEY, "text"])


# Asking, cached ----------------------------------------------------------------------------------


class Cache:
    """The verdicts file: read once, appended in memory, written atomically now and then."""

    COLUMNS = [*KEY, "verdict", "reply", "prompt_tokens", "completion_tokens", "requests"]

    def __init__(self, path: Path):
        self.path, self.new, self.written_at = path, [], time.monotonic()
        self.rows = read_table(path)[self.COLUMNS] if path.exists() else pd.DataFrame(columns=self.COLUMNS)

    def done(self) -> set[tuple]:
        return set(self.rows[KEY].itertuples(index=False, name=None))

    def add(self, key: tuple, reply: Reply) -> None:
        self.new.append((*key, reply.verdict, reply.text[:4000], reply.prompt_tokens, reply.completion_tokens,
                         reply.requests))
        if len(self.new) >= _FLUSH_ROWS or time.monotonic() - self.written_at > _FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.new:
            fresh = pd.DataFrame(self.new, columns=self.COLUMNS)
            self.rows = fresh if self.rows.empty else pd.concat([self.rows, fresh], ignore_index=True)
            self.new = []
            write_parquet(self.rows, self.path)
        self.written_at = time.monotonic()


async def _ask_all(judge: Judge, todo: pd.DataFrame, cache: Cache) -> None:
    """Ask every request of `todo`, at most `concurrency` at once; the first alone (it checks the endpoint)."""
    items = iter(todo.itertuples(index=False))

    async def worker(client) -> None:
        for t in items:  # one iterator shared by the workers: each request is taken once
            cache.add(tuple(getattr(t, k) for k in KEY), await judge.ask(client, t.text))

    async with judge.client() as client:
        t = next(items)
        cache.add(tuple(getattr(t, k) for k in KEY), await judge.ask(client, t.text, first=True))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(judge.cfg.concurrency):
                    group.create_task(worker(client))
        except ExceptionGroup as group_error:  # one line: the first reason the judge stopped
            first = next((e for e in group_error.exceptions if isinstance(e, InputError)), None)
            if first is None:
                raise
            raise first from None


# The rates ---------------------------------------------------------------------------------------


def outcomes(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, aspect, prompt_id) judged in both orders: `outcome` (1 win, 0 tie,
    -1 loss; NaN where an order's verdict is invalid) and `consistent` (both orders agree)."""
    v = verdicts.assign(score=[_SCORE[o].get(x, np.nan) for o, x in zip(verdicts["order"], verdicts["verdict"])])
    wide = v.pivot(index=["model", "aspect", "prompt_id"], columns="order", values="score").reindex(
        columns=["first", "second"])  # (model, aspect, prompt) x order
    both = wide.dropna()
    wide["outcome"] = pd.Series(combine_orders(both["first"].astype(int), both["second"].astype(int)),
                                index=both.index, dtype=float)
    wide["consistent"] = wide["first"] == wide["second"]
    return wide.reset_index()


def summarise(verdicts: pd.DataFrame, table: pd.DataFrame, *, n_resamples: int, seed: int) -> list[dict]:
    """Per preference model: its weights and, per aspect, the rates with intervals, the prompts
    judged, the invalid ones (left out of the rates) and the share where both orders agreed."""
    per = outcomes(verdicts)
    weights = table.drop_duplicates("model").set_index("model")["weights"]
    out = []
    for model, rows in per.groupby("model", sort=True):
        aspects = {}
        for aspect, r in rows.groupby("aspect", sort=False):
            valid = r["outcome"].dropna().to_numpy(dtype=np.int8)  # (n_valid,)
            rates = win_rates(valid, n_resamples=n_resamples, seed=seed) if valid.size else None
            aspects[aspect] = {"rates": rates, "prompts": len(r), "invalid": int(r["outcome"].isna().sum()),
                               "consistent": float(r.loc[r["outcome"].notna(), "consistent"].mean())
                               if valid.size else None}
        order = [PREFERENCE, *sorted(a for a in aspects if a != PREFERENCE)]
        out.append({"model": model, "weights": [float(w) for w in weights[model]],
                    "aspects": {a: aspects[a] for a in order if a in aspects}})
    return out


def _usage(rows: pd.DataFrame, cfg: JudgeConfig, judge: Judge, asked: int, cached: int) -> dict:
    tokens = {"prompt": int(rows["prompt_tokens"].sum()), "completion": int(rows["completion_tokens"].sum())}
    cost = None
    if cfg.price_in is not None and cfg.price_out is not None:
        cost = (tokens["prompt"] * cfg.price_in + tokens["completion"] * cfg.price_out) / 1e6
    return {"verdicts": len(rows), "asked_now": asked, "from_cache": cached, "requests_now": judge.counts.requests,
            "retries_now": judge.counts.retries, "malformed_replies_now": judge.counts.malformed,
            "requests_all": int(rows["requests"].sum()), "invalid": int((rows["verdict"] == INVALID).sum()),
            "tokens": tokens, "prices_per_million": {"in": cfg.price_in, "out": cfg.price_out}, "cost": cost}


# The command -------------------------------------------------------------------------------------


def judge_run(root: str | Path, cfg: JudgeConfig) -> Path:
    """Ask the judge what is not cached, then write the summary (see the module docstring).

    Args:
        root: an evaluated run folder (the caller holds its writer lock).
        cfg: the judge's settings (`evaluate.judge`).

    Returns:
        The summary's path, RUN/judge/vs-REF--JUDGE.json.

    Raises:
        InputError: bad input (see `pairs`, `judge_api.chat_url`), or the judge unavailable
            (`judge_api.JudgeUnavailable`; the verdicts so far are kept).
    """
    root = Path(root)
    if not cfg.model:
        raise InputError("no judge model: give --model NAME (evaluate.judge.model)")
    judge = Judge(cfg, os.environ.get(cfg.api_key_env) or None)  # checks the URL before anything is read
    label = reference_label(root, cfg.against)
    with hold(cfg.against, shared=True) if label != "base" else contextlib.nullcontext():
        table, meta = pairs(root, cfg.against, cfg.prompts)
    todo = tasks(cfg, table, meta["objectives"])
    cache = Cache(root / "judge" / f"vs-{label}.parquet")
    done = cache.done()
    fresh = todo[[k not in done for k in todo[KEY].itertuples(index=False, name=None)]]
    console.print(f"judge {cfg.model} at {judge.where}: {table['model'].nunique()} models x "
                  f"{table['prompt_id'].nunique()} prompts vs {label}; {len(todo)} verdicts, "
                  f"{len(todo) - len(fresh)} cached, {len(fresh)} to ask ({cfg.concurrency} at once)")
    try:
        if len(fresh):
            asyncio.run(_ask_all(judge, fresh, cache))
    finally:
        cache.flush()  # what was answered stays answered, however this ended
    rows = cache.rows.merge(todo[KEY], on=KEY)  # this judge, template and answers only
    summary = {"judge": cfg.model, "endpoint": judge.where, "against": label,
               "against_folder": None if label == "base" else str(Path(cfg.against).resolve()),
               "prompts": int(table["prompt_id"].nunique()), "objectives": meta["objectives"],
               "bootstrap": {"resamples": meta["bootstrap"], "seed": meta["seed"]},
               "models": summarise(rows, table, n_resamples=meta["bootstrap"], seed=meta["seed"]),
               "usage": _usage(rows, cfg, judge, len(fresh), len(todo) - len(fresh))}
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.model).strip("-.") or "judge"
    path = write_json(summary, root / "judge" / f"vs-{label}--{slug}.json")
    u = summary["usage"]
    cost = "" if u["cost"] is None else f", cost {u['cost']:.4g}"
    console.print(f"judged: {u['requests_now']} requests now ({u['retries_now']} retries), {u['invalid']} invalid "
                  f"verdicts; {u['tokens']['prompt']:,} prompt + {u['tokens']['completion']:,} completion "
                  f"tokens in all{cost}; {path}")
    return path

