"""`paretohqd export`: a trained run's models as folders to ship, each with a model card, and
the files that serve them with vLLM (`lora-modules.json`, `vllm-serve.sh`); `--merged` adds whole
models that plain transformers loads. A preference between the trained ones is written as its exact
mix (theta = W + sum_i lambda_i dW_i, `paretohqd.use.choose`); a run whose one model answers every
preference (RiC) is written once, its preferences as prompt tags.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

from paretohqd import methods
from paretohqd.config import Config
from paretohqd.io import InputError, atomic_dir, write_json, write_text
from paretohqd.lock import hold
from paretohqd.policy.vllm import lora_rank, max_lora_rank
from paretohqd.runfolder import RunFolder
from paretohqd.use import Choice, checked_weights, choose, one_model, open_run


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


def hub_id(name: str) -> str | None:
    """`name` if it reads as a Hugging Face Hub id (`owner/name`, not a local path), else None: the Hub
    refuses a card whose `base_model` or `datasets` names no repository, so local paths stay out of
    the metadata (the card's text still states them).

    Examples:
        >>> hub_id("Anthropic/hh-rlhf"), hub_id("/data/hh-rlhf"), hub_id("smollm2-135m-instruct")
        ('Anthropic/hh-rlhf', None, None)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _source_name(source) -> str:
    return _model_name(source if isinstance(source, str) else source.path)


def _model_name(model: str) -> str:
    """A model's Hub id, or a local one's folder name (the card's text gives the whole path)."""
    return hub_id(model) or Path(model).name


def eval_results(r: RunFolder, row: dict):
    """A model's evaluation row (report.json) as `model-index` results: per objective the mean reward
    on the held-out prompts, the reward model named as the metric (`_model_name`), the 95% interval
    in its args."""
    from huggingface_hub import EvalResult

    cfg = r.cfg
    sources = cfg.evaluate.sources if cfg.evaluate.source == "split" else cfg.data.sources
    names = [_source_name(s) for s in sources]
    return [EvalResult(task_type="text-generation", task_name="multi-objective alignment",
                       dataset_type=names[0] if len(names) == 1 else ",".join(names),
                       dataset_name=f"{row['n']} held-out prompts ({', '.join(names)}, evaluate.source "
                                    f"{cfg.evaluate.source})", dataset_split="held-out",
                       metric_type=_model_name(cfg.rewards.models[o]), metric_name=f"mean {o} reward", metric_config=o,
                       metric_value=round(float(row["mean"][o]), 6),
                       metric_args={"prompts": row["n"], **({"ci95": row["ci95"][o]} if row["ci95"][o][0] is not None
                                                             else {})})  # no interval without bootstrap
            for o in r.objectives]


def card_metadata(r: RunFolder, models: dict[str, list]) -> str:
    """The YAML front matter of a model card (huggingface_hub `ModelCardData`): base model and
    datasets where they are Hub ids, and `model-index` with one entry per evaluated model
    (name -> its `eval_results`)."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import eval_results_to_model_index
    from huggingface_hub.utils import yaml_dump

    cfg = r.cfg
    datasets = [d for d in (hub_id(_source_name(s)) for s in cfg.data.sources) if d]
    data = ModelCardData(base_model=hub_id(cfg.policy.model), datasets=datasets or None,
                         library_name="peft" if cfg.train.lora else "transformers", pipeline_tag="text-generation",
                         tags=["paretohqd", "multi-objective-alignment", cfg.method])
    meta = data.to_dict()
    index = [entry for name, results in models.items() if results
             for entry in eval_results_to_model_index(name, results)]
    return yaml_dump({**meta, **({"model-index": index} if index else {})}, sort_keys=False)


def _usage(r: RunFolder, name: str, choice: Choice, repo_id: str | None) -> list[str]:
    """How to load this model: from the run (`paretohqd.load`), with PEFT or transformers (from the
    Hub repository's folder when pushed, else this folder), and with vLLM."""
    cfg, w = r.cfg, ", ".join(f"{x:g}" for x in choice.weights)
    where = f'"{repo_id}", subfolder="{name}"' if repo_id else f'"{name}"'
    load = (f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{cfg.policy.model}"), {where})'
            if cfg.train.lora else f"model = AutoModelForCausalLM.from_pretrained({where})")
    fetch = (f"hf download {repo_id} --local-dir {repo_id.split('/')[1]} && {repo_id.split('/')[1]}/vllm-serve.sh"
             if repo_id else "./vllm-serve.sh")
    lines = ["## How to use", "",
             f"With the run folder, any preference (the exact mix between trained ones): "
             f"`paretohqd.load(\"runs/{r.root.name}\", [{w}])`.", "",
             "```python", "# from the Hub" if repo_id else "# from the export folder (run from inside it)",
             "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    lines += ["from peft import PeftModel"] if cfg.train.lora else []
    lines += [f'tokenizer = AutoTokenizer.from_pretrained("{cfg.policy.model}")', load, "```", "",
              f"vLLM (`--lora-modules {name}=PATH`, every preference one model name on one server): `{fetch}`."
              if cfg.train.lora else f"vLLM: `{fetch}` (one server per model).", ""]
    return lines


def model_card(r: RunFolder, name: str, choice: Choice, base: str, evaluation: dict, repo_id: str | None = None) -> str:
    """A model card (README.md) for one exported model: metadata (`card_metadata`), the preference and
    how it was trained, the run's evaluation, and how to load it (from the Hub's `repo_id` when given)."""
    cfg, method = r.cfg, methods.module(r.cfg)
    weights = ", ".join(f"{o} {x:g}" for o, x in zip(r.objectives, choice.weights))
    row = evaluation.get(choice.name)
    lines = ["---", card_metadata(r, {f"{name} ({weights})": eval_results(r, row) if row else []}).strip(), "---",
             "", f"# {name}: preference {weights}", "",
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
    lines += ["", *_evaluation_lines(r, choice, evaluation), "", *_usage(r, name, choice, repo_id)]
    return "\n".join(lines)


def _evaluation_lines(r: RunFolder, choice: Choice, evaluation: dict) -> list[str]:
    row = evaluation.get(choice.name)
    if row is None and evaluation and len(choice.parts) > 1:
        return ["Not evaluated: an interpolated preference (the run's report evaluates the trained ones)."]
    if row is None and evaluation:
        return [f"Not evaluated: no row for {choice.name} in the run's report.json."]
    if row is None:
        return ["Not evaluated: the run has no report.json (`paretohqd evaluate RUN` writes it)."]
    lines = [f"## Evaluation ({row['n']} held-out prompts, from the run's report.json)", "",
             "| objective | reward model | mean reward | 95% interval |", "|---|---|---|---|"]
    for o in r.objectives:
        lo, hi = row["ci95"][o]
        ci = "-" if lo is None else f"{lo:.4f} .. {hi:.4f}"
        lines.append(f"| {o} | {r.cfg.rewards.models[o]} | {row['mean'][o]:.4f} | {ci} |")
    lines += ["", f"Collapse rate {row['collapse_rate']:.1%}."]
    entry = evaluation["_method"]
    if entry.get("hypervolume") is not None:
        lines.append(f"Hypervolume of the run's preference models ({len(entry['models'])}) together: "
                     f"{entry['hypervolume']:.4f}.")
    return lines


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
           trust_remote_code: bool = False, repo_id: str | None = None) -> Path:
    """`paretohqd export`: every trained preference's model, and any `weights` mixed, as folders in
    `out` with model cards, `lora-modules.json` and `vllm-serve.sh`; `merged`: also whole models
    (merged/NAME) that plain transformers loads; `repo_id`: the Hub repository the export is for
    (`paretohqd.hub`), which the cards load from. The run is read only (a reader's lock); `out` must
    be absent, empty or an earlier export (`check_export_folder`), and is replaced whole.

    Returns:
        The export folder.

    Raises:
        InputError: a bad `out` (nothing is written), a link in the run's model folders, or what
            `open_run` and `checked_weights` refuse.
        BusyError: a writer holds the run folder.
    """
    check_export_folder(out, run)
    with hold(run, shared=True), hold(out):
        check_export_folder(out, run)  # again, now that no other export can be writing it
        return _export(run, Path(out), merged, weights, trust_remote_code, repo_id)


def _export(run: str | Path, out: Path, merged: bool, weights: list[str], trust_remote_code: bool,
            repo_id: str | None) -> Path:
    from paretohqd.policy.generate import load_mixed
    from paretohqd.policy.load import load_tokenizer, resolve_policy

    r, cfg, finals = open_run(run, trust_remote_code=trust_remote_code)
    wanted = [checked_weights(w, r.objectives) for w in weights]  # checked before anything is written
    choices = [choose(r, finals, w) for w in wanted]
    evaluation = _evaluation(r)
    base = resolve_policy(cfg.policy.model)
    shared = one_model(finals)
    # (folder name, choice) for each model to write: one model for all once, its preferences as tags
    models: list[tuple[str, Choice]] = []
    if shared:
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
            write_text(model_card(r, name, choice, base, evaluation, repo_id), folder / "README.md")
            if merged:
                model = load_mixed(cfg.policy, [(m.adapter, lam) for m, lam in choice.parts], lora=cfg.train.lora,
                                   dtype=cfg.policy.dtype)
                model.save_pretrained(tmp / "merged" / name, safe_serialization=True)
                tokenizer.save_pretrained(tmp / "merged" / name)
        index = [{"name": name, "weights": c.weights.round(6).tolist(), "model": c.name, "tag": c.tag,
                  "folder": name, **({"merged": f"merged/{name}"} if merged else {})} for name, c in models]
        if shared:  # every preference (trained and asked for) is a tag on the one model
            index += [{"name": m.model, "weights": m.weights.round(6).tolist(), "model": m.model, "tag": m.tag,
                       "folder": "ric"} for m in finals]
            index += [{"name": c.name, "weights": c.weights.round(6).tolist(), "model": c.name, "tag": c.tag,
                       "folder": "ric"} for c in choices]
        write_json({"run": str(r.root), "method": cfg.method, "objectives": r.objectives, "base_model": base,
                    "prompt_format": cfg.policy.prompt_format, "models": index}, tmp / "export.json")
        _write_serving(cfg, base, [name for name, _ in models], tmp)
        write_text(_index_readme(r, index, shared, evaluation, repo_id), tmp / "README.md")
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


def _index_readme(r: RunFolder, index: list[dict], shared: bool, evaluation: dict, repo_id: str | None) -> str:
    """The export's top-level README.md: on the Hub the repository's card, its `model-index` one entry
    per evaluated preference."""
    cfg = r.cfg
    results = {f"{row['name']} ({', '.join(f'{o} {x:g}' for o, x in zip(r.objectives, row['weights']))})":
               eval_results(r, evaluation[row["model"]]) for row in index
               if row["name"] == row["model"] and row["model"] in evaluation}  # RiC's one model: its preferences
    lines = ["---", card_metadata(r, results).strip(), "---", "", f"# Models of run `{r.root.name}` ({cfg.method})", "",
             f"Objectives: {', '.join(r.objectives)}. Base model: {cfg.policy.model}. "
             f"Each folder is a {'LoRA adapter' if cfg.train.lora else 'whole model'} with its model card.", "",
             "| name | weights | model | folder |" + (" tag |" if shared else ""),
             "|---|---|---|---|" + ("---|" if shared else "")]
    for row in index:
        lines.append(f"| {row['name']} | {', '.join(f'{x:g}' for x in row['weights'])} | {row['model']} | "
                     f"{row['folder']} |" + (f" `{row['tag']}` |" if shared else ""))
    lines += ["", "Serve them with vLLM: `./vllm-serve.sh` (the exact command; `lora-modules.json` holds the same "
              "modules in vLLM's JSON form, paths relative to this folder). The prompt format is "
              f"`{cfg.policy.prompt_format}`" + (": send the raw HH transcript to the completions endpoint."
                                                 if cfg.policy.prompt_format == "hh" else "."),
              ""]
    if shared:
        lines += ["RiC: one model; a preference is the tag on its own line after the last user turn.", ""]
    if repo_id:
        name = repo_id.split("/")[1]
        one = "PeftModel.from_pretrained(base, " if cfg.train.lora else "AutoModelForCausalLM.from_pretrained("
        lines += [f"From the Hub: `hf download {repo_id} --local-dir {name} && {name}/vllm-serve.sh`; one "
                  f"preference: `{one}\"{repo_id}\", subfolder=\"FOLDER\")` (each folder's card says how).", ""]
    return "\n".join(lines)
