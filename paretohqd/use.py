"""Use a trained run's models: a model for any preference (`paretohqd.load`), `paretohqd generate`
and `paretohqd export`.

A preference w on the run's grid gets the model trained for it. Any other w on the simplex gets
the exact mix of the trained models around it, theta = W + sum_i lambda_i dW_i, with lambda the
barycentric coordinates of w in the cell of trained preferences that contains it: for two
objectives the two neighbouring preferences; for a simplex grid (`select.preferences: 11`) the
grid's cell (the Freudenthal triangulation, which for three objectives is the grid's triangles);
for an explicit list of preferences a Delaunay triangulation of them (scipy). RiC trains one model
for every preference, so w only changes its prompt tag (the desired rewards).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd import methods
from paretohqd.config import Config, ConfigError, load_config
from paretohqd.io import InputError, atomic_dir, read_table, write_json, write_text
from paretohqd.lock import hold
from paretohqd.methods import ric
from paretohqd.pareto.simplex import TOL, barycentric, check_weights, parse_weights
from paretohqd.policy.vllm import lora_rank, max_lora_rank
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


def choose(r: RunFolder, finals: list[FinalModel], weights) -> Choice:
    """The trained models (and lambdas) that answer `weights`, and RiC's tag for it.

    Raises:
        InputError: weights off the simplex or of the wrong length, or outside the trained preferences.
    """
    w = parse_weights(weights, r.objectives) if isinstance(weights, str) else check_weights(weights, r.objectives)
    prefs = np.array([m.weights for m in finals])  # (P, M)
    if methods.module(r.cfg) is ric:  # one model; the preference is only its prompt tag
        near = np.abs(prefs - w).max(axis=1)  # (P,) a trained preference keeps its name
        model = finals[int(near.argmin())] if near.min() <= TOL else finals[0]
        return Choice(w, [(model, 1.0)], ric.preference_tag(r, w))
    cell = barycentric(prefs, w)
    if cell is None:
        raise InputError(f"weights {','.join(f'{x:g}' for x in w)} lie outside the run's trained preferences "
                         f"({len(prefs)} of them, e.g. {', '.join(','.join(f'{x:g}' for x in p) for p in prefs[:3])}); "
                         f"give weights inside their hull")
    return Choice(w, [(finals[i], lam) for i, lam in cell], None)


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


# Export ------------------------------------------------------------------------------------------

def _evaluation(r: RunFolder) -> dict[str, dict]:
    """Each model's evaluation in RUN/report.json (model name -> its row), and `_method` -> the
    method's entry; empty when the run has no report."""
    path = r.path("report.json")
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    entry = next((e for e in report.get("methods", []) if Path(e.get("folder", "")).resolve() == r.root.resolve()),
                 (report.get("methods") or [None])[0])
    if entry is None:
        return {}
    return {**{m["model"]: m for m in entry.get("models", [])}, "_method": entry}


def model_card(r: RunFolder, name: str, choice: Choice, base: str, evaluation: dict) -> str:
    """A model card (README.md) for one exported model."""
    cfg, method = r.cfg, methods.module(r.cfg)
    weights = ", ".join(f"{o} {x:g}" for o, x in zip(r.objectives, choice.weights))
    lines = ["---", f"base_model: {cfg.policy.model}", "library_name: peft" if cfg.train.lora else "library_name: transformers",
             "tags: [paretohqd, multi-objective-alignment]", "---", "",
             f"# {name}: preference {weights}", "",
             f"Trained by paretohqd, run `{r.root.name}`: {method.describe(cfg)} (method `{cfg.method}`).", "",
             "| | |", "|---|---|",
             f"| preference weights | {weights} |",
             f"| model | {choice.name} |"]
    if len(choice.parts) > 1:
        lines.append("| mixed from | " + ", ".join(f"{m.model} ({', '.join(f'{x:g}' for x in m.weights)}) x {lam:.6g}"
                                                   for m, lam in choice.parts) + " (theta = W + sum lambda dW, exact) |")
    lines += [f"| base model | {cfg.policy.model} (served from `{base}`) |",
              f"| prompt format | {cfg.policy.prompt_format} |",
              f"| data sources | {', '.join(map(str, cfg.data.sources))} |",
              f"| reward models | {', '.join(f'{o}: {m}' for o, m in cfg.rewards.models.items())} |"]
    if choice.tag is not None:
        lines.append(f"| prompt tag | `{choice.tag}` on its own line after the last user turn (RiC) |")
    lines.append("")
    row = evaluation.get(choice.name)
    if row is not None:
        lines += [f"## Evaluation ({row['n']} held-out prompts, from the run's report.json)", "",
                  "| objective | mean reward | 95% interval |", "|---|---|---|"]
        for o in r.objectives:
            lo, hi = row["ci95"][o]
            ci = "-" if lo is None else f"{lo:.4f} .. {hi:.4f}"
            lines.append(f"| {o} | {row['mean'][o]:.4f} | {ci} |")
        lines += ["", f"Collapse rate {row['collapse_rate']:.1%}."]
        entry = evaluation["_method"]
        if entry.get("hypervolume") is not None:
            lines.append(f"Hypervolume of the run's preference models ({len(entry['models'])}) together: "
                         f"{entry['hypervolume']:.4f}.")
    elif evaluation and len(choice.parts) > 1:
        lines.append("Not evaluated: an interpolated preference (the run's report evaluates the trained ones).")
    elif evaluation:
        lines.append(f"Not evaluated: no row for {choice.name} in the run's report.json.")
    else:
        lines.append("Not evaluated: the run has no report.json (`paretohqd evaluate RUN` writes it).")
    return "\n".join(lines) + "\n"


EXPORT_MARKER = ".paretohqd-export.json"
"""The file every export folder holds: `export` replaces a folder with it (an earlier export), no other."""


def check_export_folder(out: str | Path, run: str | Path) -> None:
    """Refuse an `--out` that `export` would destroy: it must be absent, empty or an earlier export.

    Raises:
        InputError: a file or link, a folder inside the run, or a folder holding anything else.
    """
    out, run = Path(out), Path(run)
    fix = "give a new or empty folder (an earlier export is replaced whole)"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"--out {out}: not a folder (a file or a link); {fix}")
    if Path(os.path.abspath(out)).is_relative_to(os.path.abspath(run)):
        raise InputError(f"--out {out}: inside the run folder {run}; {fix} outside it")
    if out.is_dir() and not (out / EXPORT_MARKER).is_file():
        entries = sorted(os.listdir(out))
        if entries:
            more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
            raise InputError(f"--out {out}: holds {entries[0]!r}{more} and is no earlier export (no {EXPORT_MARKER}); "
                             f"export would replace it whole: {fix}, or remove {out} yourself")


def _copy_files(adapter: Path, folder: Path) -> None:
    """A trained model's files as they are: its folder's own files, never a link's target."""
    folder.mkdir()
    for f in [adapter, *sorted(adapter.iterdir())]:
        if f.is_symlink():
            raise InputError(f"{f}: a symbolic link in the run; export copies the run's own files, never what a "
                             f"link points to: replace the link with what it names")
        if f != adapter and f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, folder / f.name, follow_symlinks=False)


def export(run: str | Path, out: str | Path, *, merged: bool = False, weights: list[str] = (),
           trust_remote_code: bool = False) -> Path:
    """`paretohqd export`: every trained preference's model, and any `weights` mixed, as folders in
    `out` with model cards, `lora-modules.json` and `vllm-serve.sh`; `merged`: also whole models
    (merged/NAME) that plain transformers loads. The run is read only (a reader's lock); `out` must
    be absent, empty or an earlier export (`check_export_folder`), and is replaced whole.

    Returns:
        The export folder.

    Raises:
        InputError: a bad `out` (nothing is written), a link in the run's model folders, or what
            `open_run` and `parse_weights` refuse.
        BusyError: a writer holds the run folder.
    """
    check_export_folder(out, run)
    with hold(run, shared=True), hold(out):
        check_export_folder(out, run)  # again, now that no other export can be writing it
        return _export(run, Path(out), merged, weights, trust_remote_code)


def _export(run: str | Path, out: Path, merged: bool, weights: list[str], trust_remote_code: bool) -> Path:
    from paretohqd.policy.generate import load_mixed
    from paretohqd.policy.load import load_tokenizer, resolve_policy

    r, cfg, finals = open_run(run, trust_remote_code=trust_remote_code)
    wanted = [parse_weights(w, r.objectives) for w in weights]  # checked before anything is written
    choices = [choose(r, finals, w) for w in wanted]
    evaluation = _evaluation(r)
    base = resolve_policy(cfg.policy.model)
    is_ric = methods.module(cfg) is ric
    # (folder name, choice) for each model to write: RiC's one model once, its preferences as tags
    models: list[tuple[str, Choice]] = []
    if is_ric:
        models.append(("ric", Choice(finals[0].weights, [(finals[0], 1.0)], finals[0].tag)))
    else:
        models += [(m.model, Choice(m.weights, [(m, 1.0)], m.tag)) for m in finals]
        for w, c in zip(wanted, choices):
            if len(c.parts) > 1:
                models.append(("w-" + "-".join(f"{x:g}" for x in w), c))
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code) if merged else None
    with atomic_dir(out) as tmp:
        for name, choice in models:
            folder = tmp / name
            if len(choice.parts) == 1:  # a trained model: its folder's files as they are
                _copy_files(choice.parts[0][0].adapter, folder)
            else:
                _write_mixed_adapter(cfg, choice, folder)
            write_text(model_card(r, name, choice, base, evaluation), folder / "README.md")
            if merged:
                model = load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in choice.parts], lora=cfg.train.lora,
                                   dtype=cfg.policy.dtype)
                model.save_pretrained(tmp / "merged" / name, safe_serialization=True)
                tokenizer.save_pretrained(tmp / "merged" / name)
        index = [{"name": name, "weights": c.weights.round(6).tolist(), "model": c.name, "tag": c.tag,
                  "folder": name, **({"merged": f"merged/{name}"} if merged else {})} for name, c in models]
        if is_ric:  # every preference (trained and asked for) is a tag on the one model
            index += [{"name": m.model, "weights": m.weights.round(6).tolist(), "model": m.model, "tag": m.tag,
                       "folder": "ric"} for m in finals]
            index += [{"name": c.name, "weights": c.weights.round(6).tolist(), "model": c.name, "tag": c.tag,
                       "folder": "ric"} for c in choices]
        write_json({"run": str(r.root), "method": cfg.method, "objectives": r.objectives, "base_model": base,
                    "prompt_format": cfg.policy.prompt_format, "models": index}, tmp / "export.json")
        _write_serving(cfg, base, [name for name, _ in models], tmp)
        write_text(_index_readme(r, models, index, is_ric), tmp / "README.md")
        write_json({"written_by": "paretohqd export", "run": str(r.root)}, tmp / EXPORT_MARKER)
    return out


def _write_mixed_adapter(cfg: Config, choice: Choice, folder: Path) -> None:
    """One adapter whose weight change is sum_i lambda_i dW_i (PEFT `cat`, as `methods/soups.py`);
    without LoRA, the mixed whole model."""
    from paretohqd.policy.load import load_policy

    if not cfg.train.lora:
        from paretohqd.policy.generate import load_mixed

        load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in choice.parts], lora=False,
                   dtype=cfg.policy.dtype).save_pretrained(folder, safe_serialization=True)
        return
    from peft import PeftModel

    base = load_policy(cfg.policy.model, dtype=cfg.policy.dtype, trust_remote_code=cfg.policy.trust_remote_code)
    names = [m.model for m, _ in choice.parts]
    model = PeftModel.from_pretrained(base, str(choice.parts[0][0].adapter), adapter_name=names[0])
    for name, (m, _) in zip(names[1:], choice.parts[1:]):
        model.load_adapter(str(m.adapter), adapter_name=name)
    # named "default", PEFT saves the mix at the folder's top level
    model.add_weighted_adapter(names, [lam for _, lam in choice.parts], "default", combination_type="cat")
    model.save_pretrained(folder, selected_adapters=["default"], safe_serialization=True)
    write_json({"weights": choice.weights.tolist(), "mixed": {m.model: lam for m, lam in choice.parts},
                "combination": "cat"}, folder / "merge.json")


def _write_serving(cfg: Config, base: str, names: list[str], tmp: Path) -> None:
    """`lora-modules.json` (vLLM's JSON form of --lora-modules, paths relative to the export folder)
    and `vllm-serve.sh` (the command, run from anywhere: paths from the script's own folder, every
    one shell-quoted)."""
    q = shlex.quote
    head = ["#!/usr/bin/env bash", "# written by paretohqd export; vLLM was not run here",
            "set -euo pipefail", 'HERE="$(cd "$(dirname "$0")" && pwd)"']
    if cfg.train.lora:
        rank = max(lora_rank(tmp / n) for n in names)
        write_json([{"name": n, "path": n, "base_model_name": base} for n in names], tmp / "lora-modules.json")
        modules = " \\\n    ".join(f'{q(n + "=")}"$HERE"/{q(n)}' for n in names)
        body = [f"# each request picks a preference by its model name ({', '.join(names)}); "
                f"the largest adapter rank is {rank}",
                f"vllm serve {q(base)} --enable-lora --max-lora-rank {max_lora_rank(rank)} \\\n"
                f"  --lora-modules \\\n    {modules} \"$@\""]
    else:  # whole fine-tuned models: one server each
        write_json([], tmp / "lora-modules.json")
        body = ["# fully fine-tuned models (train.lora false): one server per model, each on its own port"]
        body += [f'vllm serve "$HERE"/{q(n)} --served-model-name {q(n)} --port {8000 + i} "$@" &'
                 for i, n in enumerate(names)]
        body.append("wait")
    script = tmp / "vllm-serve.sh"
    write_text("\n".join(head + body) + "\n", script)
    script.chmod(0o755)


def _index_readme(r: RunFolder, models: list[tuple[str, Choice]], index: list[dict], is_ric: bool) -> str:
    cfg = r.cfg
    lines = [f"# Models of run `{r.root.name}` ({cfg.method})", "",
             f"Objectives: {', '.join(r.objectives)}. Base model: {cfg.policy.model}. "
             f"Each folder is a {'LoRA adapter' if cfg.train.lora else 'whole model'} with its model card.", "",
             "| name | weights | model | folder |" + (" tag |" if is_ric else ""),
             "|---|---|---|---|" + ("---|" if is_ric else "")]
    for row in index:
        lines.append(f"| {row['name']} | {', '.join(f'{x:g}' for x in row['weights'])} | {row['model']} | "
                     f"{row['folder']} |" + (f" `{row['tag']}` |" if is_ric else ""))
    lines += ["", "Serve them with vLLM: `./vllm-serve.sh` (the exact command; `lora-modules.json` holds the same "
              "modules in vLLM's JSON form, paths relative to this folder). The prompt format is "
              f"`{cfg.policy.prompt_format}`" + (": send the raw HH transcript to the completions endpoint."
                                                 if cfg.policy.prompt_format == "hh" else "."),
              ""]
    if is_ric:
        lines += ["RiC: one model; a preference is the tag on its own line after the last user turn.", ""]
    return "\n".join(lines)


# Interpolation quality ---------------------------------------------------------------------------


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
    from paretohqd.data.prepare import sample_id
    from paretohqd.evaluate.answer import heldout_prompts
    from paretohqd.evaluate.collapse import collapse_reasons
    from paretohqd.evaluate.front import LEVEL, bootstrap_mean
    from paretohqd.io import write_parquet
    from paretohqd.policy.generate import generate, load_mixed
    from paretohqd.policy.load import load_tokenizer
    from paretohqd.policy.prompts import resolve_format
    from paretohqd.progress import console
    from paretohqd.rewards.score import write_scores

    # `evaluate` runs the run's own config, as `paretohqd run` did (its remote code included)
    r, cfg, finals = open_run(run, trust_remote_code=True)
    if methods.module(cfg) is ric:
        raise InputError(f"{r.root}: a RiC run trains one model for every preference; there is nothing to interpolate")
    evaluated = r.path("evaluate", "responses.parquet")
    if not evaluated.exists():
        raise InputError(f"{evaluated}: no such file; evaluate the run first (paretohqd evaluate {r.root})")
    trained_answers = read_table(evaluated)
    names, prefs = r.objectives, np.array([m.weights for m in finals])  # (P, M)
    left_out = []
    for i in range(len(finals)):
        others = [j for j in range(len(finals)) if j != i]
        cell = barycentric(prefs[others], prefs[i])
        if cell is not None:
            left_out.append((finals[i], [(finals[others[j]], lam) for j, lam in cell]))
    if not left_out:
        raise InputError(f"{r.root}: no trained preference lies between other trained ones "
                         f"({len(finals)} preferences); train at least 3 (select.preferences >= 3)")
    prompts = heldout_prompts(r.root, cfg.evaluate.prompts)
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
    folder = r.path("evaluate", "interpolation")
    rows = []
    for model, parts in left_out:
        choice = Choice(model.weights, parts, None)
        path = folder / f"{model.model}.parquet"
        if path.exists():
            console.print(f"[dim]skip {model.model} (mixed answers on disk)[/]")
        else:
            mixed = load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in parts], lora=cfg.train.lora,
                               dtype=cfg.generate.dtype)
            # the seed `evaluate` gave every model: the trained model's answers drew the same stream
            responses, _ = generate(mixed, tokenizer, [list(c) for c in prompts["messages"]], cfg.generate,
                                    seed=cfg.seed, fmt=fmt, label=f"{choice.name} answers")
            df = prompts[["prompt_id", "prompt"]].assign(model=choice.name, response=responses)
            df.insert(0, "id", [sample_id(p, a) for p, a in zip(df["prompt"], df["response"])])
            write_scores(cfg, df, path)
        mixed_df = read_table(path).set_index("prompt_id")
        trained_df = trained_answers[trained_answers["model"] == model.model].set_index("prompt_id")
        common = [p for p in prompts["prompt_id"] if p in trained_df.index and p in mixed_df.index]
        if len(common) != len(prompts):
            raise InputError(f"{evaluated}: {model.model} answered {len(common)} of the {len(prompts)} held-out "
                             f"prompts; re-evaluate the run (delete {r.path('evaluate')} and run paretohqd evaluate {r.root})")
        a = trained_df.loc[common, names].to_numpy(dtype=np.float64)  # (n, M)
        b = mixed_df.loc[common, names].to_numpy(dtype=np.float64)  # (n, M)
        diff, lo, hi = bootstrap_mean(b - a, n_resamples=cfg.evaluate.bootstrap, seed=cfg.seed)
        neighbours = np.array([trained_answers.loc[trained_answers["model"] == m.model, names].mean().to_numpy()
                               for m, _ in parts])  # (K, M)
        rows.append({
            "left_out": model.model, "weights": np.round(model.weights, 6).tolist(), "mix": choice.name,
            "mixed_from": {m.model: lam for m, lam in parts},
            "trained": dict(zip(names, a.mean(axis=0).tolist())), "mixed": dict(zip(names, b.mean(axis=0).tolist())),
            "difference": dict(zip(names, diff.tolist())),
            "ci95": {o: [None if np.isnan(x) else float(x), None if np.isnan(y) else float(y)]
                     for o, x, y in zip(names, lo, hi)},
            "neighbour_spread": dict(zip(names, (neighbours.max(axis=0) - neighbours.min(axis=0)).tolist())),
            "collapse_rate": {"trained": float(trained_df.loc[common, "collapse"].notna().mean()),
                              "mixed": float(pd.Series(collapse_reasons(mixed_df.loc[common, "response"])).notna().mean())},
        })
    out = {"objectives": names, "prompts": len(prompts), "seed": cfg.seed, "bootstrap": cfg.evaluate.bootstrap,
           "level": LEVEL, "rows": rows}
    write_json(out, r.path("evaluate", "interpolation.json"))
    return out
