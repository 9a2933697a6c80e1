"""The `paretohqd` command. Each command: load config, apply overrides, validate, call the stage.

Over 400 lines on purpose: 13 commands, each option declared inline where typer reads it (its help
text included), and no logic beyond parsing; splitting it would scatter one command table."""

from __future__ import annotations

import errno
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from paretohqd.config import ConfigError, load_config
from paretohqd.devices import LaunchError
from paretohqd.io import InputError, disk_full_error
from paretohqd.progress import console
from paretohqd.serve.limits import Limits

app = typer.Typer(help="ParetoHqD: offline multi-objective alignment with Pareto high-quality data.",
                  no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config; defaults apply where it is silent.")
SetOpt = typer.Option([], "--set", help="Override a config key, e.g. --set select.k=50 (repeatable).")
TrustOpt = typer.Option(False, "--trust-remote-code", help="Allow a run whose config.yaml sets "
                        "policy.trust_remote_code: true (the model's own Python code runs here); refused without it.")


def user_errors(fn):
    """Print errors a person must fix as one clear message (no traceback), exit code 2: bad input,
    a busy folder, and what the machine refuses (a full disk, a missing file, no permission, a
    name too long, no network), each of which names its file or host. Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, InputError, LaunchError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None
        except OSError as e:
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            where = Path(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes)) else Path.cwd()
            print(f"error: {disk_full_error(where) if full else e}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def print_counts(title: str, counts: dict[str, int | float]) -> None:
    table = Table(title=title)
    table.add_column("")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else f"{v:.4g}")
    console.print(table)


@data_app.command("prepare")
@user_errors
def data_prepare(
    sources: list[str] = typer.Argument(None, help="HH-RLHF .jsonl(.gz) files or folders, or Anthropic/hh-rlhf "
                                        "(other formats: data.sources in --config)."),
    out: Path = typer.Option(Path("data/hh.parquet"), "--out", "-o", help="Parquet file to write."),
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Read the data sources into (prompt, response) samples with their labels; filter, deduplicate, write Parquet."""
    from paretohqd.data.prepare import prepare
    from paretohqd.policy.load import load_tokenizer

    cfg = load_config(config, set_, {"data.sources": list(sources)} if sources else {})
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    _, counts = prepare(cfg.data, tokenizer, out)
    print_counts(f"prepared {out}", counts)


@app.command("select")
@user_errors
def select(
    scores: Path = typer.Argument(..., help="Scored samples: .parquet/.csv/.jsonl with `id` and one column per objective."),
    objectives: str = typer.Option(..., "--objectives", help="Objective columns, comma-separated, e.g. helpful,harmless."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for selection.parquet and selection.png."),
    preferences: Optional[str] = typer.Option(None, "--preferences", help="Grid points per axis (11 = step 0.1) or a weights file (.yaml/.json/.csv)."),
    k: Optional[int] = typer.Option(None, "--k", help="Samples per preference."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Top Pareto layers in the pool, or auto."),
    method: Optional[str] = typer.Option(None, "--method", help="direction (ParetoHqD) or scalarised (ablation)."),
    allow_small_pool: bool = typer.Option(False, "--allow-small-pool", help="Take the whole pool if it holds fewer than k."),
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Select k samples per preference from the Pareto pool of a scored table."""
    from paretohqd.select import flag_updates, select_file

    cfg = load_config(config, set_, flag_updates(preferences, k, layers, method, allow_small_pool))
    select_file(scores, [o.strip() for o in objectives.split(",") if o.strip()], cfg, out)


@app.command("run")
@user_errors
def run_job(
    config: Path = typer.Argument(..., help="Run config (YAML), e.g. configs/demo.yaml."),
    set_: list[str] = SetOpt,
    check: bool = typer.Option(False, "--check", help="Only check the config, models, data and run folder (what every run checks first), then stop."),
    unit: Optional[str] = typer.Option(None, "--unit", help="Run only this unit of `paretohqd plan` (e.g. stage1/pref-03), "
                                       "once the units it needs are done (else exit 2 naming them)."),
    wave: Optional[str] = typer.Option(None, "--wave", help="With --unit-index: run the unit at that index of this wave "
                                       "(an array job's task, e.g. --wave stage1 --unit-index $SLURM_ARRAY_TASK_ID)."),
    unit_index: Optional[int] = typer.Option(None, "--unit-index", help="With --wave: the unit's index in the wave."),
) -> None:
    """The whole method: prepare, score, select, stage 1, stage 2, evaluate, report; resumable, in runs/NAME/.
    With --unit (or --wave and --unit-index): one unit of it, as a scheduler's task."""
    from paretohqd.pipeline import run
    from paretohqd.preflight import preflight
    from paretohqd.units import pick, run_units

    cfg = load_config(config, set_)
    # how this config was given, so a suggested command (e.g. `reward train`) reads the same one
    config_args = " ".join(shlex.quote(a) for a in ["--config", str(config), *(x for s in set_ for x in ("--set", s))])
    if unit is not None and (wave is not None or unit_index is not None):
        raise ConfigError("give --unit ID, or --wave NAME with --unit-index N, not both")
    if unit is None and (wave is not None) != (unit_index is not None):
        raise ConfigError("--wave and --unit-index go together: --wave NAME --unit-index N")
    if wave is not None:
        unit = pick(run_units(cfg), wave=wave, index=unit_index).id
    if check:
        cfg, _ = preflight(cfg, config_args=config_args)
        what = f"unit {pick(run_units(cfg), unit).id} of " if unit is not None else ""
        console.print(f"{config}: {what}ready to run (method {cfg.method}, policy {cfg.policy.model}, "
                      f"{len(cfg.rewards.models)} reward models, run folder {cfg.runs_dir}/{cfg.name})")
        return
    run(cfg, config_args=config_args, unit=unit)


@app.command("plan")
@user_errors
def plan_units(
    config: Path = typer.Argument(..., help="Run config (YAML), e.g. configs/paper-hh-2obj.yaml."),
    set_: list[str] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON instead of a table."),
    costs: str = typer.Option("smollm2-cpu", "--costs", help="Cost model of the estimates: smollm2-cpu (measured on "
                              "2 CPU cores) or llama2-7b-h100-assumed (assumed, not measured)."),
    slurm: Optional[Path] = typer.Option(None, "--slurm", help="Write a Slurm script here: one job array per wave."),
    k8s: Optional[Path] = typer.Option(None, "--k8s", help="Write Kubernetes Indexed Jobs (one per wave) and "
                                       "submit.sh into this folder."),
    skypilot: Optional[Path] = typer.Option(None, "--skypilot", help="Write a SkyPilot managed-jobs pipeline here."),
) -> None:
    """The run's units for a scheduler: what each needs first, its resources, estimated device time, whether done."""
    import json

    from paretohqd import deploy
    from paretohqd.io import write_text
    from paretohqd.plan import plan, plan_table

    p = plan(load_config(config, set_), costs)
    run_args = ["run", str(config), *(x for s in set_ for x in ("--set", s))]
    written = []
    if slurm is not None:
        written.append(write_text(deploy.slurm_script(p, run_args), slurm))
    if k8s is not None:
        written += [write_text(text, k8s / name) for name, text in deploy.k8s_jobs(p, run_args).items()]
    if skypilot is not None:
        written.append(write_text(deploy.skypilot_yaml(p, run_args), skypilot))
    if as_json:
        print(json.dumps(p, indent=2))
        return
    console.print(plan_table(p))
    for path in written:
        console.print(f"wrote {path}")


@app.command("compare")
@user_errors
def compare(
    config: Path = typer.Argument(..., help="Config with a compare section, e.g. configs/compare-cpu.yaml."),
    set_: list[str] = SetOpt,
    estimate: bool = typer.Option(False, "--estimate", help="Print the time estimate per method (2 CPU cores, and "
                                  "one GPU beside the paper's GPU hours) and stop."),
) -> None:
    """Run each method of compare.methods as runs_dir/NAME-METHOD on shared data; one table and plot."""
    from paretohqd.compare import compare as compare_methods
    from paretohqd.compare import print_estimate

    cfg = load_config(config, set_)
    if estimate:
        print_estimate(cfg, paper_table=True)
        return
    compare_methods(cfg)


reward_app = typer.Typer(help="Reward models: train the offline heads and column objectives' scorers.",
                         no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("train")
@user_errors
def reward_train(
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated subset of helpful,harmless,humor (default: all)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Instead, train the scorer of this column "
                                            "objective (rewards.models NAME: column:LABEL) on data.sources' labels."),
    from_column: Optional[str] = typer.Option(None, "--from-column", help="With --objective: ridge regression on "
                                              "this label column (default: the objective's own label)."),
    from_pairs: Optional[str] = typer.Option(None, "--from-pairs", help="With --objective: Bradley-Terry on answer "
                                             "pairs; the column names each pair's preferred response_id, e.g. "
                                             "better_response_id."),
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Train the MiniLM reward heads on the shared data, or (--objective) a column objective's scorer on the
    config's data; print and save held-out accuracy (AUC for humor, correlation for a label)."""
    cfg = load_config(config, set_)
    if objective is not None:
        if only:
            raise InputError("--only names offline HH heads and --objective a column objective; give one of them")
        from paretohqd.rewards.labels import train_label_scorer

        m = train_label_scorer(cfg, objective, from_column=from_column, from_pairs=from_pairs)
        print_counts(f"scorer of {objective} in {m['folder']}", {k: v for k, v in m.items() if isinstance(v, (int, float))})
        return
    if from_column or from_pairs:
        raise InputError("--from-column / --from-pairs train a column objective's scorer: give --objective NAME too")
    from paretohqd.rewards import OFFLINE
    from paretohqd.rewards.heads import train_heads

    names = [f"minilm-{n.strip()}" for n in only.split(",")] if only else list(OFFLINE)
    results = train_heads(cfg.rewards, names, sources=cfg.data.sources)
    table = Table(title=f"reward heads in {cfg.rewards.dir} (seed {cfg.rewards.seed})")
    for col in ("model", "held-out accuracy", "held-out AUC", "held-out n", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in results.items():
        n = m.get("held_out_pairs", m.get("held_out_examples"))
        auc = f"{m['held_out_auc']:.3f}" if "held_out_auc" in m else "-"
        table.add_row(name, f"{m['held_out_accuracy']:.3f}", auc, f"{n:,}", f"{m['train_seconds']:.0f}")
    console.print(table)


def _parse_reward_models(spec: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ConfigError(f"--reward-models {spec!r}: expected objective=model[,objective=model], "
                          "e.g. helpful=minilm-helpful,harmless=minilm-harmless")
    return {k.strip(): v.strip() for k, v in pairs}


@app.command("score")
@user_errors
def score(
    data: Path = typer.Argument(..., help="Table with id, prompt, response columns (.parquet/.csv/.jsonl); a column "
                                "objective reads its label column when the table has them all, else its scorer."),
    reward_models: Optional[str] = typer.Option(
        None, "--reward-models", "-r", help="objective=model,... (default: rewards.models from the config)."),
    out: Path = typer.Option(Path("scores.parquet"), "--out", "-o", help="Parquet file to write; stats go beside it."),
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Score a table with every reward model (cached: a rerun scores only new rows)."""
    from paretohqd.rewards.score import score_file, stats_path

    updates = {"rewards.models": _parse_reward_models(reward_models)} if reward_models else {}
    cfg = load_config(config, set_, updates)
    score_file(cfg, data, out)
    print(f"wrote {out} and {stats_path(out)}")


@app.command("evaluate")
@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run folder, e.g. runs/demo (its config.yaml is used)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Evaluate on these prompts instead of the held-out "
                                           "ones: .txt (one a line), .jsonl or .parquet with `prompt` or `messages`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="With --prompts: the folder for that evaluation "
                                       "and its report (the run's own evaluate/ is left as it is)."),
    interpolation: bool = typer.Option(False, "--interpolation", help="Also leave each surrounded preference out, "
                                       "rebuild it from its neighbours' models and compare it with the trained one "
                                       "on the held-out prompts (the report's 'Interpolation quality')."),
    set_: list[str] = SetOpt,
) -> None:
    """Answer held-out prompts (or --prompts FILE) with every preference model and the base model;
    score; write the report."""
    from paretohqd.pipeline import evaluate_prompts, evaluate_run

    cfg = load_config(run_dir / "config.yaml", set_)
    if interpolation and (prompts is not None or out is not None):
        raise InputError("--interpolation compares on the run's held-out prompts; give it without --prompts/--out")
    if prompts is None and out is None:
        evaluate_run(cfg, run_dir)  # resumes: models already answered are skipped
        if interpolation:
            from paretohqd.interpolation import interpolation_quality
            from paretohqd.lock import hold
            from paretohqd.report.run import write_report

            with hold(run_dir):  # its answers and the report again (with its interpolation table) are written
                interpolation_quality(run_dir)
                write_report([run_dir], html=cfg.evaluate.html)
        return
    if prompts is None or out is None:
        raise InputError("give --prompts FILE and --out DIR together (without both, the run's held-out prompts are used)")
    from paretohqd.data.prompts import read_prompts

    _, conversations = read_prompts(prompts)
    evaluate_prompts(cfg, run_dir, conversations, prompts, out)


@app.command("report")
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Evaluated run folders; several are overlaid in one table and plot."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.json/.md/.html and front.png; "
                                       "default: the run folder, or runs_dir/compare-A-B for several runs."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write report.html (fronts and answers to "
                              "explore in a browser, ~5 MB)."),
) -> None:
    """Write report.json, report.md, front.png and report.html from evaluated runs (the first run's bounds for all)."""
    from paretohqd.report import write_report

    write_report(list(runs), out, html=html)


@app.command("judge")
@user_errors
def judge(
    run_dir: Path = typer.Argument(..., help="An evaluated run folder, e.g. runs/demo."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="The judge's OpenAI-compatible API, e.g. "
                                           "https://api.openai.com/v1 or http://127.0.0.1:8000/v1."),
    model: Optional[str] = typer.Option(None, "--model", help="The judge model's name at the endpoint."),
    against: Optional[str] = typer.Option(None, "--against", help="Reference: base (default) or another "
                                          "evaluated run folder (its model of the same preference)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Requests at once (default 4)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable with the API "
                                              "key (default OPENAI_API_KEY)."),
    prompts: Optional[int] = typer.Option(None, "--prompts", min=1, help="Judge the first N evaluation prompts "
                                          "(default: all)."),
    price_in: Optional[float] = typer.Option(None, "--price-in", min=0, help="Price per million prompt tokens."),
    price_out: Optional[float] = typer.Option(None, "--price-out", min=0, help="Price per million completion "
                                              "tokens."),
    set_: list[str] = SetOpt,
) -> None:
    """Win/tie/loss rates of each preference model against a reference, from any OpenAI-compatible LLM judge
    (both orders asked; cached in RUN/judge/, resumable); then the report again with them."""
    from paretohqd.pipeline import judge as judge_run

    flags = {"endpoint": endpoint, "model": model, "against": against, "concurrency": concurrency,
             "api_key_env": api_key_env, "prompts": prompts, "price_in": price_in, "price_out": price_out}
    cfg = load_config(run_dir / "config.yaml", set_, {f"evaluate.judge.{k}": v for k, v in flags.items() if v is not None})
    judge_run(cfg, run_dir)


@app.command("generate")
@user_errors
def generate(
    run_dir: Path = typer.Argument(..., help="A trained run folder, e.g. runs/demo."),
    weights: str = typer.Option(..., "--weights", "-w", help="Preference, one weight per objective summing to 1, "
                                "e.g. 0.3,0.7; between the trained ones, their exact mix answers."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="One prompt (plain text or an HH transcript)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="A .txt (one prompt a line), .jsonl or .parquet "
                                           "file with a `prompt` or `messages` column."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the answers (.parquet, .jsonl or .csv) "
                                       "instead of printing them."),
    set_: list[str] = SetOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Answer prompts with a trained run's model for any preference (the run's generation settings;
    --set generate.* changes them)."""
    from paretohqd.data.prompts import prompt_messages, read_prompts
    from paretohqd.io import write_table
    from paretohqd.use import generate_table

    if (prompt is None) == (prompts is None):
        raise InputError("give exactly one of --prompt TEXT or --prompts FILE")
    if out is not None and out.suffix.lower() not in (".parquet", ".jsonl", ".csv"):
        raise InputError(f"{out}: unknown table format; use .parquet, .jsonl or .csv")
    texts, conversations = ([prompt], [prompt_messages(prompt)]) if prompt is not None else read_prompts(prompts)
    df = generate_table(run_dir, weights, texts, conversations, list(set_), trust_remote_code=trust_remote_code)
    if out is not None:
        if out.suffix.lower() == ".csv":  # a CSV cell holds text: the weights as typed
            df = df.assign(weights=[",".join(f"{x:g}" for x in w) for w in df["weights"]])
        write_table(df, out)
        console.print(f"wrote {len(df)} answers to {out} (model {df['model'].iloc[0]})")
        return
    table = Table(title=f"{run_dir} at weights {weights} (model {df['model'].iloc[0]})", show_lines=True)
    table.add_column("prompt")
    table.add_column("response")
    for p, r in zip(df["prompt"], df["response"]):
        table.add_row(p.strip(), r)
    console.print(table)


@app.command("export")
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A trained run folder, e.g. runs/demo."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write: new, empty, or an earlier export "
                                       "(replaced whole); any other folder is refused."),
    merged: bool = typer.Option(False, "--merged", help="Also write whole merged models (merged/NAME) that plain "
                                "transformers AutoModelForCausalLM.from_pretrained loads."),
    weights: list[str] = typer.Option([], "--weights", "-w", help="Also export this preference, mixed exactly from "
                                      "the trained ones, e.g. 0.35,0.65 (repeatable)."),
    hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Publish the export as this Hugging Face Hub "
                                      "model repository, OWNER/NAME, in one commit (the token: HF_TOKEN or "
                                      "`hf auth login`); with --out, that folder is what is uploaded."),
    private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repository private."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --push-to-hub: list what would be uploaded and the "
                                 "card's metadata; nothing is sent."),
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Export a trained run's models: adapters with model cards, lora-modules.json and vllm-serve.sh,
    into a folder (--out) or a Hugging Face Hub repository (--push-to-hub)."""
    from paretohqd.export import export as export_run

    if hub is None and (private or dry_run):
        raise InputError(f"{'--private' if private else '--dry-run'} is an option of --push-to-hub OWNER/NAME; "
                         f"add it, or drop the option")
    if hub is None and out is None:
        raise InputError("nowhere to export to: give --out DIR (a folder) or --push-to-hub OWNER/NAME (the Hub)")
    if hub is not None:
        from paretohqd.hub import push

        _print_push(push(run_dir, hub, private=private, dry_run=dry_run, out=out, merged=merged, weights=list(weights),
                         trust_remote_code=trust_remote_code))
        return
    folder = export_run(run_dir, out, merged=merged, weights=list(weights), trust_remote_code=trust_remote_code)
    console.print(f"wrote {folder}: README.md, export.json, lora-modules.json, vllm-serve.sh")


def _print_push(result) -> None:
    table = Table(title=f"{'would upload' if result.url is None else 'uploaded'} to {result.repo_id}")
    table.add_column("path")
    table.add_column("bytes", justify="right")
    for path, size in result.files:
        table.add_row(path, f"{size:,}")
    console.print(table)
    console.print(f"{len(result.files)} files, {sum(s for _, s in result.files):,} bytes. The repository card's "
                  f"metadata (README.md):", markup=False)
    console.print(result.metadata, markup=False, highlight=False, soft_wrap=True)
    if result.url is None:
        console.print("dry run: nothing was sent; without --dry-run the files go up in one commit", markup=False)
    else:
        console.print(f"pushed: {result.url}", markup=False)


@app.command("serve")
@user_errors
def serve(
    run_dir: Path = typer.Argument(..., help="A trained run folder, e.g. runs/demo."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default answers this machine only."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="PARETOHQD_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on every request."),
    cache: int = typer.Option(4, "--cache", min=1, help="Mixed preferences (w=...) kept loaded; without LoRA, "
                              "models kept loaded (least recently used go). A batch builds at most this many."),
    window: float = typer.Option(0.03, "--batch-window", min=0, help="Seconds a first request waits for others "
                                 "to share its generate batch."),
    max_queue: int = typer.Option(Limits.max_queue, "--max-queue", min=1, help="Requests waiting for a batch; "
                                  "one more gets 429 with Retry-After."),
    max_tokens: int = typer.Option(Limits.max_tokens, "--max-tokens", min=1, help="The most tokens one request may "
                                   "ask for (more: 400)."),
    max_body: int = typer.Option(Limits.max_body, "--max-body", min=1, help="Request body bytes (more: 413)."),
    timeout: float = typer.Option(Limits.timeout, "--timeout", min=0.001, help="Seconds from a request's arrival "
                                  "to its last token (then 504)."),
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Serve a trained run's models with an OpenAI-compatible API (/v1/models, /v1/chat/completions):
    pref-XX, base, or any preference as model "w=0.3,0.7". Without --api-key it binds this machine only."""
    from paretohqd.lock import hold
    from paretohqd.serve import serve as run_server

    with hold(run_dir, shared=True):  # read-only, for the server's life: it loads adapters as requests ask
        run_server(run_dir, host=host, port=port, api_key=api_key, cache_size=cache, window=window,
                   trust_remote_code=trust_remote_code,
                   limits=Limits(max_queue=max_queue, max_tokens=max_tokens, max_body=max_body, timeout=timeout))
