"""The evaluate step of `paretohqd run` (and `paretohqd evaluate RUN`): answer held-out prompts.

Every preference model of the run, and the untuned base policy as a reference row, answers the
first `evaluate.prompts` held-out prompts with the run's generation settings; the answers are
scored by the run's reward models and checked for collapse. Outputs, in RUN/evaluate/:

- `responses/<model>.parquet`: one model's raw answers; each is a resumable unit (a killed
  evaluate regenerates only the models whose file is missing);
- `responses.parquet`: all answers with model, preference_index (-1 for the base model),
  weights, prompt_id, prompt, response, collapse (reason or null) and one column per objective;
- `bounds.json`: the run's hypervolume box (per-objective min/max of `data/scores.parquet`) and
  the same data's mean/std (the report's z-scored hypervolume), written once so every later
  report of this run uses the same box;
- `disjoint.json`: the held-out vs training prompt check, with counts;
- `meta.json`: what the report needs from the config (objectives, preferences, seed, ...),
  so `paretohqd report` reads files only.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.data.prepare import prompt_id, sample_id
from paretohqd.evaluate.collapse import collapse_reasons
from paretohqd.evaluate.front import run_bounds, zscore_stats
from paretohqd.io import InputError, read_table, write_json, write_parquet
from paretohqd.policy.generate import answer
from paretohqd.policy.prompts import hh_text, resolve_format, with_tag
from paretohqd.progress import console
from paretohqd.rewards.score import write_scores
from paretohqd.runfolder import FinalModel, RunFolder

BASE = "base"
"""Model name of the untuned policy's reference row."""
ANSWER_STARTS = "\n\nAssistant:"
"""Where `hh_text` ends a transcript and the training data's prompt text does not."""


# Prompts -----------------------------------------------------------------------------------------


def heldout_prompts(root: Path, n: int) -> pd.DataFrame:
    """The first `n` held-out prompts of the run (prompt_id recomputed from the text).

    Raises:
        InputError: no `data/heldout.parquet`, or fewer than `n` prompts in it.
    """
    path = root / "data" / "heldout.parquet"
    if not path.exists():
        raise InputError(f"{path}: no such file; the prepare step of `paretohqd run` writes it")
    held = read_table(path)
    # recomputed, not trusted from the column: the check below must hash exactly what is asked
    held = held.assign(prompt_id=held["prompt"].map(prompt_id)).drop_duplicates("prompt_id")
    if len(held) < n:
        raise InputError(f"{path} holds {len(held)} distinct prompts but evaluate.prompts = {n}; "
                         f"set evaluate.prompts <= {len(held)} in {root / 'config.yaml'}")
    return held.head(n).reset_index(drop=True)[["prompt_id", "prompt", "messages"]]


def training_prompt_files(root: Path) -> list[Path]:
    """Every table whose prompts a model of this run trained on or generated for."""
    return [root / "data" / "train.parquet", *sorted((root / "stage2").glob("generated-*.parquet"))]


def check_disjoint(root: Path, heldout: pd.DataFrame, source: str | None = None) -> dict:
    """Check by prompt hash that no held-out prompt (or prompt of the file `source`) was used in
    training or stage-2 generation.

    Returns:
        The check: held-out count, distinct prompts per file checked, and the overlap (0).

    Raises:
        InputError: `data/train.parquet` is missing, or some held-out prompt is a training prompt.
    """
    held = set(heldout["prompt_id"])
    files: dict[str, int] = {}
    overlap: dict[str, str] = {}  # prompt_id -> file that also has it
    for path in training_prompt_files(root):
        if not path.exists():
            raise InputError(f"{path}: no such file; cannot check the held-out prompts against training")
        ids = set(pd.read_parquet(path, columns=["prompt"])["prompt"].map(prompt_id))
        files[str(path.relative_to(root))] = len(ids)
        overlap.update({p: str(path.relative_to(root)) for p in held & ids})
    if overlap:
        pid, where = sorted(overlap.items())[0]
        text = heldout.loc[heldout["prompt_id"] == pid, "prompt"].iloc[0]
        what, fix = (("held-out prompts", "The run's data split is broken: start a new run (--set name=NEW)")
                     if source is None else (f"prompts of {source}", f"Remove them from {source}"))
        raise InputError(
            f"{len(overlap)} of the {len(held)} {what} were also used in training "
            f"(e.g. prompt_id {pid} in {where}: {text[-80:]!r}); scores on them would flatter every "
            f"model. {fix}")
    return {"heldout_prompts": len(held), "training_prompts": files, "overlap": 0,
            "hash": "prompt_id = sha256(prompt text)[:16]", **({"prompts_file": source} if source else {})}


def conversation_prompts(conversations: list[list[dict]]) -> pd.DataFrame:
    """Conversations from outside the run as evaluation prompts (prompt_id, prompt, messages),
    duplicates dropped. The prompt text is the HH transcript the training data stores
    (`\\n\\nHuman: ...`, no trailing Assistant turn), so the same question hashes alike.

    Examples:
        >>> conversation_prompts([[{"role": "user", "content": "Hi"}]])["prompt"].tolist()
        ['\\n\\nHuman: Hi']
    """
    texts = [hh_text(c)[:-len(ANSWER_STARTS)] for c in conversations]
    df = pd.DataFrame({"prompt_id": [prompt_id(t) for t in texts], "prompt": texts, "messages": conversations})
    return df.drop_duplicates("prompt_id").reset_index(drop=True)


# Bounds ------------------------------------------------------------------------------------------


def hypervolume_box(root: Path, names: list[str]) -> dict:
    """The run's hypervolume box: read `evaluate/bounds.json`, or compute and store it once.

    It holds per objective the min/max (`lower`/`upper`) and the mean/std (population) of the
    scored training data. Files written before mean/std were added lack them; the report then
    computes them from `source`.

    Raises:
        InputError: no `data/scores.parquet`, an objective column missing, or stored bounds that
            name other objectives than the config.
    """
    path = root / "evaluate" / "bounds.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["objectives"] != names:
            raise InputError(f"{path} holds bounds for {stored['objectives']} but the config names {names}; "
                             "delete the file to recompute it from data/scores.parquet")
        return stored
    scores_path = root / "data" / "scores.parquet"
    scores = read_table(scores_path)
    missing = [o for o in names if o not in scores.columns]
    if missing:
        raise InputError(f"{scores_path} lacks objective column(s) {missing}; it has {list(scores.columns)}")
    try:
        lo, hi = run_bounds(scores[names].to_numpy())
        mean, std = zscore_stats(scores[names].to_numpy())
    except ValueError as e:
        raise InputError(f"{scores_path}: {e}") from None
    out = {"objectives": names, "lower": lo.tolist(), "upper": hi.tolist(), "mean": mean.tolist(), "std": std.tolist(),
           "source": str(scores_path.relative_to(root)), "n_samples": len(scores),
           "ref_normalised": [0.0] * len(names), "ref_raw": lo.tolist()}
    write_json(out, path)
    return out


# Models ------------------------------------------------------------------------------------------


def model_specs(r: RunFolder, finals: list[FinalModel]) -> list[dict]:
    """The base model, then each preference's final model; checks every model folder is finished.

    Raises:
        InputError: a preference model was not trained to the end (no done marker).
    """
    missing = sorted({str(m.done.parent) for m in finals if not m.done.exists()})
    if missing:
        raise InputError(f"{len(missing)} preference model(s) not trained to the end: {missing[:3]}; "
                         f"finish training first (paretohqd run {r.path('config.yaml')})")
    specs = [{"model": BASE, "preference_index": -1, "weights": None, "adapter": None, "tag": None}]
    specs += [{"model": m.model, "preference_index": i, "weights": np.round(m.weights, 6).tolist(),
               "adapter": m.adapter, "tag": m.tag} for i, m in enumerate(finals)]
    return specs


def _answer_model(r: RunFolder, tokenizer, prompts: pd.DataFrame, spec: dict, out: Path) -> None:
    # `evaluate.samples_per_prompt` answers to each prompt, next to each other (the report averages them)
    prompts = prompts.loc[prompts.index.repeat(r.cfg.evaluate.samples_per_prompt)].reset_index(drop=True)
    conversations = [list(m) for m in prompts["messages"]]
    if spec["tag"] is not None:  # RiC: the desired rewards go into the prompt; the scored prompt stays plain
        conversations = [with_tag(c, spec["tag"]) for c in conversations]
    # one seed for every model: common random numbers make differences between models less noisy
    seed = r.cfg.seed if r.cfg.evaluate.seed is None else r.cfg.evaluate.seed
    saved = out.with_name(f".{out.stem}.batches")  # batch by batch: a kill loses one batch, not the model
    responses = answer(r.cfg, tokenizer, conversations, spec["adapter"], seed=seed, label=f"{spec['model']} answers",
                       saved=saved, ranks=r.ranks)
    if not r.ranks.main:  # every process answered its share; the main one writes
        return
    df = prompts[["prompt_id", "prompt"]].assign(
        model=spec["model"], preference_index=spec["preference_index"],
        weights=[spec["weights"]] * len(prompts), response=responses)
    write_parquet(df[["model", "preference_index", "weights", "prompt_id", "prompt", "response"]], out)
    shutil.rmtree(saved, ignore_errors=True)


def protocol(r: RunFolder, tokenizer) -> dict:
    """The run's protocol choices that move its numbers (README, "Reproducing the paper")."""
    cfg = r.cfg
    return {"prompt_format": resolve_format(tokenizer, cfg.policy.prompt_format),
            "select_nadir": cfg.select.nadir, "evaluate_source": cfg.evaluate.source,
            "evaluate_sources": cfg.evaluate.sources if cfg.evaluate.source == "split" else None,
            "stage2_prompts_per": cfg.stage2.prompts_per, "top_k": cfg.generate.top_k, "top_p": cfg.generate.top_p,
            "temperature": cfg.generate.temperature, "stop": cfg.generate.stop}


# The step ----------------------------------------------------------------------------------------


def evaluate(r: RunFolder, tokenizer, finals: list[FinalModel], description: str, *,
             prompts: pd.DataFrame | None = None, folder: Path | None = None, source: str | None = None) -> Path:
    """Answer, score and check the held-out prompts with the base model and every final model
    (resumable: a model whose answers are on disk is not asked again).

    Args:
        r: the run folder.
        tokenizer: the policy's tokenizer.
        finals: the method's final models, one per preference.
        description: one line naming the method, for the report.
        prompts: other prompts than the held-out ones (`conversation_prompts`), from the file `source`.
        folder: where the evaluation files go; default RUN/evaluate. Elsewhere, its bounds.json is
            the run's (the same hypervolume box) with the scored data named by absolute path.

    Returns:
        The path of `evaluate/responses.parquet`.

    Raises:
        InputError: missing run files, overlapping prompts, or unfinished models (see helpers).
    """
    cfg, names = r.cfg, r.objectives
    folder = Path(folder) if folder is not None else r.path("evaluate")
    if prompts is None:
        prompts = heldout_prompts(r.root, cfg.evaluate.prompts)
    # checked on every call, also when resuming: it is cheap and it is the claim the report makes
    disjoint = check_disjoint(r.root, prompts, source)
    specs = model_specs(r, finals)
    if r.ranks.main:  # (under a launcher every process evaluates its share: the main one writes)
        _write_meta(r, tokenizer, folder, specs, description, disjoint, n_prompts=len(prompts), source=source)
    out = folder / "responses.parquet"
    parts = [folder / "responses" / f"{spec['model']}.parquet" for spec in specs]
    answered = r.ranks.broadcast([_readable(part) for part in parts] if r.ranks.main else None)
    todo = []
    for spec, part, skip in zip(specs, parts, answered):
        if skip:
            console.print(f"[dim]skip {spec['model']} (answered)[/]")
        else:
            todo.append(functools.partial(_answer_model, r, tokenizer, prompts, spec, part))
    r.run_all("generate", todo)  # the models answer independently (one task each under `executor: ray`)
    r.ranks.barrier()  # every part written (by the main process) before any process reads them
    df = pd.concat([read_table(part) for part in parts], ignore_index=True)
    df["collapse"] = collapse_reasons(df["response"])
    df.insert(0, "id", [sample_id(p, r) for p, r in zip(df["prompt"], df["response"])])
    write_scores(cfg, df, out, ranks=r.ranks)
    return out


def _write_meta(r: RunFolder, tokenizer, folder: Path, specs: list[dict], description: str, disjoint: dict, *,
                n_prompts: int, source: str | None) -> None:
    """`disjoint.json`, the hypervolume box (`bounds.json`) and `meta.json`: what the report reads."""
    cfg, names = r.cfg, r.objectives
    write_json(disjoint, folder / "disjoint.json")
    box = hypervolume_box(r.root, names)
    if folder != r.path("evaluate"):
        write_json({**box, "source": str((r.root / box["source"]).resolve())}, folder / "bounds.json")
    write_json({"method": cfg.name, "variant": cfg.method, "description": description, "objectives": names,
                "tags": [s["tag"] for s in specs[1:]],
                "preferences": [s["weights"] for s in specs[1:]], "seed": cfg.seed,
                "bootstrap": cfg.evaluate.bootstrap, "samples": cfg.evaluate.samples,
                "prompts": n_prompts, **({"prompts_file": source} if source else {}), "policy": cfg.policy.model,
                "generate": cfg.generate.model_dump(mode="json"), "protocol": protocol(r, tokenizer)},
               folder / "meta.json")


def _readable(part: Path) -> bool:
    """Whether a model's saved answers can be used; a file that cannot be read is deleted (with a
    warning naming it) so that the model answers again."""
    if not part.exists():
        return False
    try:
        read_table(part)
        return True
    except InputError as e:
        console.print(f"[yellow]warning: discarding {part}, which cannot be read ({str(e)[:160]}); answering again[/]")
        part.unlink()
        return False
