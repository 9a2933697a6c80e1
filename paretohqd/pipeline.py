"""`paretohqd run CONFIG`: prepare -> score -> method.train -> evaluate -> report, in one run folder.

`method:` names what trains the per-preference models (`paretohqd.methods.METHODS`): ParetoHqD,
an ablation or a baseline. Preparing, scoring, evaluating and the report are the same for all.
Each step is recorded in the run folder's manifest and skipped once done (`runfolder.RunFolder`).
`run(cfg, unit=ID)` runs one step alone, a unit of `paretohqd plan` (`paretohqd.units`).
`evaluate_run` is `paretohqd evaluate RUN`: the last two steps on a finished run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from paretohqd import methods
from paretohqd.config import Config, ConfigError
from paretohqd.data.prepare import prepare, split_heldout, split_prompts
from paretohqd.devices import device_name, init_processes
from paretohqd.evaluate.answer import evaluate
from paretohqd.evaluate.judge import judge_run
from paretohqd.executor import attach, executor_problems
from paretohqd.io import InputError, read_table, write_parquet, write_text
from paretohqd.lock import hold
from paretohqd.policy.load import has_weights, load_tokenizer, resolve_policy
from paretohqd.policy.sft import check_report_to
from paretohqd.policy.vllm import check_backend
from paretohqd.progress import console
from paretohqd.report import write_report
from paretohqd.rewards import OFFLINE
from paretohqd.rewards.heads import ensure_trained
from paretohqd.rewards.score import write_scores
from paretohqd.runfolder import Only, RunFolder, UnitDone
from paretohqd.units import done, pick, rewards_marker, run_units


def run(cfg: Config, *, config_args: str = "--config CONFIG", unit: str | None = None) -> Path:
    """Run (or resume) every step of `cfg.method`, or only `unit` (`_run_unit`); returns the run folder.

    The run folder is locked (`lock.hold`) before anything is written in it, and an existing one
    before the checks, so that a second process on a running run is refused at once.
    Under `torchrun` / `accelerate launch` every process calls this: they form one group
    (`devices.init_processes`), train together, and the main process alone does the rest (and
    holds the lock for all). `config_args` (`--config FILE --set ...`) completes the commands that
    problems suggest.

    Raises:
        BusyError: another process is writing the run folder.
        ConfigError: whatever `preflight` finds, or a config that differs from the run folder's.
        LaunchError: several processes were launched but could not form a group.
        InputError: (`unit`) a unit it needs is not done.
    """
    if unit is not None:
        return _run_unit(cfg, unit, config_args)
    _join_processes()  # first: launched processes that cannot form a group stop before writing anything
    root = Path(cfg.runs_dir) / cfg.name
    # a folder that exists may be another process's run: refused before the checks (at once); a new
    # one is made and locked only once they pass, so that a run the checks stop writes nothing
    with hold(root) if root.exists() else contextlib.nullcontext():
        cfg, tokenizer = preflight(cfg, config_args=config_args)
        with hold(root):
            return _run(cfg, tokenizer)


def _run(cfg: Config, tokenizer) -> Path:
    r = RunFolder(cfg, free=methods.unread_sections(cfg))
    with attach(r):  # `executor`: the method's independent units here, or as tasks on a cluster
        return _steps(r, tokenizer)


def _run_unit(cfg: Config, unit: str, config_args: str) -> Path:
    """One unit of the run (`paretohqd.units`), once those it needs are done: the whole pipeline
    passes over every other step (`runfolder.Only`) and stops after this one. Units of one run
    share its folder's lock (a whole run, which takes it alone, is refused while units run, and they
    while it runs) and each takes its own, so that any number run at once, each unit once.

    Raises:
        InputError: a unit it needs is not done (one line naming them).
    """
    _join_processes()
    root = Path(cfg.runs_dir) / cfg.name
    root.parent.mkdir(parents=True, exist_ok=True)
    with hold(root, shared=True):
        cfg, tokenizer = preflight(cfg, config_args=config_args)
        units = run_units(cfg)
        u = pick(units, unit)
        finished = done(units, root)
        waiting = [n for n in u.needs if not finished[n]]
        if waiting:
            raise InputError(f"unit {u.id}: waits for {', '.join(waiting)} (not done in {root}); "
                             "start it after those (`paretohqd plan CONFIG` shows what is done)")
        others = tuple(p for v in units if v.id != u.id for p in (v.done, v.folder) if p is not None)
        with hold(root / ".units" / u.id.replace("/", "_").replace(" ", "_")):
            r = RunFolder(cfg, free=methods.unread_sections(cfg), only=Only(u.step, others))
            try:
                _steps(r, tokenizer)
            except UnitDone:
                pass
            console.print(f"unit {u.id}: done")
            return r.root


def _steps(r: RunFolder, tokenizer) -> Path:
    cfg = r.cfg
    console.print(f"run folder: {r.root}  device: {device_name()} x{r.n_devices}  seed: {cfg.seed}")
    console.print(f"objectives: {r.objectives}; {len(r.preferences)} preferences; k = {cfg.select.k}")

    def prepare_step() -> None:
        df, counts = prepare(cfg.data, tokenizer, r.path("data", "all.parquet"))
        if cfg.evaluate.source == "heldout":
            train_df, heldout = split_heldout(df, cfg.evaluate.prompts, cfg.seed)
            what = f"{len(heldout)} prompts held out ({len(train_df):,} samples left)"
        else:
            split = cfg.data.model_copy(update={"sources": cfg.evaluate.sources, "hub_split": cfg.evaluate.hub_split})
            eval_df, _ = prepare(split, tokenizer, r.path("data", "evaluation-split.parquet"))
            train_df, heldout = df, split_prompts(eval_df, df, cfg.evaluate.prompts, cfg.seed)
            what = f"{len(heldout)} evaluation prompts from {', '.join(cfg.evaluate.sources)}"
        write_parquet(heldout, r.heldout)
        write_parquet(train_df, r.train_data)
        console.print(f"  {counts['kept']:,} samples; {what}")

    r.step("prepare", r.train_data, prepare_step)
    marker = rewards_marker(cfg)
    if marker is not None:
        # heads are shared by every run on this machine (rewards.dir): trained once, then skipped
        offline = [n for n in cfg.rewards.models.values() if n in OFFLINE]
        r.step("rewards", marker, lambda: ensure_trained(cfg.rewards, offline, sources=cfg.data.sources))
    # column objectives take their labels here; generated answers (stage 2, evaluation) get their scorers'
    r.step("score", r.scores, lambda: write_scores(cfg, read_table(r.train_data), r.scores, labels=True))
    methods.module(cfg).train(r, tokenizer)
    _evaluate_and_report(r, tokenizer)
    return r.root


def evaluate_run(cfg: Config, root: str | Path) -> Path:
    """`_evaluate_run` with the run folder locked (`lock.hold`).

    Raises:
        BusyError: another process is writing the run folder.
    """
    _join_processes()
    with hold(root):
        return _evaluate_run(cfg, root)


def _evaluate_run(cfg: Config, root: str | Path) -> Path:
    """`paretohqd evaluate RUN`: evaluate a trained run (timed into its manifest), write the report.

    Returns:
        The path of RUN/report.json.
    """
    r = RunFolder(methods.configure(cfg), root, free=methods.unread_sections(methods.configure(cfg)))
    with attach(r):
        return _evaluate_and_report(r, load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code))


def evaluate_prompts(cfg: Config, root: str | Path, conversations: list[list[dict]], source: str | Path,
                     out: str | Path) -> Path:
    """`_evaluate_prompts` with the run folder and DIR locked (`lock.hold`).

    Raises:
        BusyError: another process is writing either.
    """
    _join_processes()
    with hold(root, shared=True), hold(out):  # the run is only read
        return _evaluate_prompts(cfg, root, conversations, source, out)


def _evaluate_prompts(cfg: Config, root: str | Path, conversations: list[list[dict]], source: str | Path,
                      out: str | Path) -> Path:
    """`paretohqd evaluate RUN --prompts FILE --out DIR`: the run's evaluation and report on other
    prompts than its held-out ones, written to DIR (RUN's own evaluate/ is left as it is).

    The prompts are checked disjoint from the run's training and stage-2 prompts by hash, as the
    held-out ones are; the hypervolume box is the run's, so the numbers compare with its report.
    DIR gets evaluate/ (resumable, as RUN/evaluate), a copy of RUN's manifest (the report's
    compute) and report.json / report.md / front.png.

    Returns:
        The path of DIR/report.json.

    Raises:
        InputError: a prompt the run trained on, an unfinished run, or DIR inside RUN.
    """
    from paretohqd.evaluate.answer import conversation_prompts

    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise InputError(f"--out {out}: inside the run folder {root}; give a folder of its own")
    r = RunFolder(methods.configure(cfg), root, free=methods.unread_sections(methods.configure(cfg)), read_only=True)
    method = methods.module(r.cfg)
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    with attach(r):
        evaluate(r, tokenizer, method.final_models(r), method.describe(r.cfg),
                 prompts=conversation_prompts(conversations), folder=out / "evaluate", source=str(source))
    if not r.state.is_main_process:
        return out / "report.json"
    if (root / "manifest.json").exists():
        write_text((root / "manifest.json").read_text(), out / "manifest.json")
    return write_report([out], out)


def judge(cfg: Config, root: str | Path) -> Path:
    """`paretohqd judge RUN`: the LLM judge's verdicts on an evaluated run (RUN/judge/, resumable),
    then the report again with their table, the run locked as its writer (`lock.hold`).

    Returns:
        The path of RUN/report.json.

    Raises:
        BusyError: another process is writing (or reading) the run folder.
        InputError: no endpoint, bad input or an unavailable judge (`paretohqd.evaluate.judge.judge_run`).
    """
    if not cfg.evaluate.judge.endpoint:
        raise InputError("no judge endpoint: give --endpoint URL (evaluate.judge.endpoint), e.g. "
                         "http://127.0.0.1:8000/v1")
    with hold(root):
        judge_run(root, cfg.evaluate.judge)
        return write_report([Path(root)], html=cfg.evaluate.html)


def _join_processes() -> None:
    state = init_processes()
    # one voice: the other processes' step names and progress would repeat the main one's
    console.quiet = not state.is_main_process


def _evaluate_and_report(r: RunFolder, tokenizer) -> Path:
    method = methods.module(r.cfg)
    r.step("evaluate", r.path("evaluate", "responses.parquet"),
           lambda: evaluate(r, tokenizer, method.final_models(r), method.describe(r.cfg)))
    if not r.state.is_main_process:
        return r.path("report.json")
    if r.cfg.evaluate.judge.enabled:
        console.print("[bold]judge[/]")
        try:
            judge_run(r.root, r.cfg.evaluate.judge)
        except InputError as e:  # the models are trained and evaluated: report them, and say how to judge
            console.print(f"[yellow]judge stopped: {e}\n  rerun `paretohqd judge {r.root}` (its verdicts are kept)[/]")
    console.print("[bold]report[/]")
    path = write_report([r.root], html=r.cfg.evaluate.html)  # every time, after the step, so its compute includes evaluate's own time
    r.print_times()
    return path


# Preflight ---------------------------------------------------------------------------------------


def preflight(cfg: Config, *, config_args: str = "--config CONFIG") -> tuple[Config, object]:
    """Check, before anything expensive, what would otherwise fail hours into a run: the method and
    its settings, the preferences, the batch split, the policy's tokenizer and prompt format (one
    training sample encoded), every reward model (a column objective's trained scorer too: the
    problem names the command that trains it, completed with `config_args`), data source and the
    run folder's config. Hub ids are asked for concurrently (each unreachable one takes
    huggingface_hub ~30 s of retries).

    Returns:
        The configured config (`methods.configure`) and the policy's tokenizer.

    Raises:
        ConfigError: every problem found, one line each, named by its config key.
    """
    cfg = methods.configure(cfg)
    hub: dict[str, tuple[str, str]] = {}  # config key -> (repo id, repo type): asked together, below
    problems = (_settings_problems(cfg) + _run_folder_problems(cfg) + _reward_problems(cfg, config_args, hub)
                + _data_problems(cfg, hub) + _policy_problems(cfg, hub))
    problems += _hub_problems(hub)
    tokenizer = None
    if not any(p.startswith("policy.model:") for p in problems):
        tokenizer, found = _tokenizer_problems(cfg)
        problems += found
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found before the run:\n  - " + "\n  - ".join(problems))
    return cfg, tokenizer


def _settings_problems(cfg: Config) -> list[str]:
    """The tracker, the generation backend, the preferences, the method's own settings and the
    processes the run is launched on."""
    from accelerate import PartialState

    from paretohqd.pareto.preferences import preferences_from_config

    problems: list[str] = []
    try:
        check_report_to(cfg.train)
    except ConfigError as e:
        problems.append(str(e))
    problems += check_backend(cfg.generate, lora=cfg.train.lora)  # vllm missing: refused now, not after stage 1
    for key, value in (("select.preferences", cfg.select.preferences), ("morlhf.preferences", cfg.morlhf.preferences),
                       ("modpo.preferences", cfg.modpo.preferences)):
        if value is None:
            continue
        try:
            preferences_from_config(value, len(cfg.rewards.models))
        except ValueError as e:
            problems.append(f"{key}: {e}")
    problems += getattr(methods.module(cfg), "check", lambda cfg: [])(cfg)  # a method's own settings (MODPO's)
    n_processes = PartialState().num_processes
    if cfg.train.batch_size % n_processes:
        problems.append(f"train.batch_size: {cfg.train.batch_size} does not split over the {n_processes} processes; "
                        f"use a multiple of {n_processes}")
    problems += executor_problems(cfg.executor, n_processes)
    if n_processes > 1 and not methods.several_processes(cfg):
        problems.append(f"method: {cfg.method!r} trains with GRPO, which runs on one process here; "
                        "launch it without torchrun / accelerate launch")
    return problems


def _run_folder_problems(cfg: Config) -> list[str]:
    """A run folder of that name made with another config."""
    from paretohqd.runfolder import config_differences

    try:
        differs = config_differences(cfg, Path(cfg.runs_dir) / cfg.name, free=methods.unread_sections(cfg))
    except ConfigError as e:
        return [f"name: {e}"]
    if differs:
        return [f"name: {Path(cfg.runs_dir) / cfg.name} was made with another config (differs in: "
                f"{', '.join(differs)}); resume with the same config, or start a new run with --set name=NEW"]
    return []


def _reward_problems(cfg: Config, config_args: str, hub: dict[str, tuple[str, str]]) -> list[str]:
    """Reward models that cannot be found, and column objectives' untrained scorers; hub ids go to `hub`."""
    from paretohqd.rewards import locate
    from paretohqd.rewards.labels import missing_scorers

    problems: list[str] = []
    for objective, name in cfg.rewards.models.items():
        try:
            kind, source = locate(name, cfg.rewards)
        except (ConfigError, OSError, ValueError) as e:  # (OSError: a name no file system takes)
            problems.append(f"rewards.models.{objective}: {e}")
            continue
        if kind == "hub":
            hub[f"rewards.models.{objective}"] = (source, "model")
    return problems + missing_scorers(cfg.rewards, cfg.data, config_args)


def _data_problems(cfg: Config, hub: dict[str, tuple[str, str]]) -> list[str]:
    """Data sources (and evaluation sources) that are neither a file nor a hub id; hub ids go to `hub`."""
    from paretohqd.data.hh_rlhf import HUB_ID
    from paretohqd.data.sources import as_source, on_hub

    problems: list[str] = []
    data_sources = [("data.sources", s) for s in cfg.data.sources]
    if cfg.evaluate.source == "split":
        data_sources += [("evaluate.sources", s) for s in cfg.evaluate.sources]
    for key, source in data_sources:
        src = as_source(source)
        if on_hub(src):
            hub[f"{key} {src.path}"] = (src.path, "dataset")
        elif not _exists(src.path):
            hub_hint = f"the hub id {HUB_ID!r}" if src.format == "hh" else "a hub dataset id owner/name"
            problems.append(f"{key}: {src.path}: no such file or folder (and not {hub_hint})")
    return problems


def _policy_problems(cfg: Config, hub: dict[str, tuple[str, str]]) -> list[str]:
    """A policy folder without weights; a hub id goes to `hub`."""
    if resolve_policy(cfg.policy.model) == cfg.policy.model and not _exists(cfg.policy.model):
        hub["policy.model"] = (cfg.policy.model, "model")  # a hub id: asked first, with the others
    elif _exists(cfg.policy.model) and not has_weights(Path(cfg.policy.model).expanduser()):
        return [f"policy.model: {cfg.policy.model} holds no model weights (*.safetensors or *.bin); "
                "give the folder a saved model (save_pretrained) or a hub id"]
    return []


def _hub_problems(hub: dict[str, tuple[str, str]]) -> list[str]:
    """The hub's answer for each of `hub`'s ids, asked concurrently: one problem per id it cannot give."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # one line per problem below, not huggingface_hub's retry chatter
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=len(hub) or 1) as pool:
        answers = {key: pool.submit(_ask_hub, *repo) for key, repo in hub.items()}
        for key, job in answers.items():
            if job.result() is not None:
                repo, repo_type = hub[key]
                problems.append(f"{key.split()[0]}: cannot reach the {repo_type} {repo!r} on the Hugging Face hub "
                                f"({job.result()}); use a local folder, or HF_HUB_OFFLINE=1 once it is in the "
                                "cache, or `hf auth login` if it is gated")
    return problems


def _ask_hub(repo: str, repo_type: str) -> str | None:
    """None if the hub (or, offline, the local cache) has `repo`, else why not, in one line."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    try:
        if constants.HF_HUB_OFFLINE:  # offline by choice: what counts is the local cache
            if repo_type == "dataset" or isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return None  # (`datasets` checks its own cache when it loads)
            return "HF_HUB_OFFLINE is set and it is not in the local cache"
        HfApi().repo_info(repo, repo_type=repo_type)
        return None
    except Exception as e:  # offline, gated, a typo, an id the hub cannot take: all end the same way
        return str(e).strip().splitlines()[0][:160] or type(e).__name__


def _tokenizer_problems(cfg: Config) -> tuple[object, list[str]]:
    """The policy's tokenizer (None if it cannot load) and the problems of encoding one real training
    sample with it, exactly as training will."""
    from paretohqd.data.sources import as_source, first_sample, on_hub
    from paretohqd.data.transcript import to_messages
    from paretohqd.policy.batches import encode
    from paretohqd.policy.prompts import resolve_format

    try:
        tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    except (OSError, ValueError) as e:  # (load_tokenizer names the model)
        return None, [f"policy.model: {str(e).strip().splitlines()[0][:240]}"]
    try:
        fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
        local = [s for s in cfg.data.sources if not on_hub(s) and Path(as_source(s).path).expanduser().exists()]
        if local:  # one real training sample, encoded exactly as training will
            sample = first_sample(local[0], cfg.data.hub_split)
            encode(tokenizer, sample.messages or to_messages(sample.prompt), sample.response, cfg.train.max_length, fmt)
    except ConfigError as e:
        return tokenizer, [str(e)]
    except InputError as e:
        return tokenizer, [f"data.sources: {e}"]
    except Exception as e:  # a template or tokenizer that cannot encode our samples
        return tokenizer, [f"policy.prompt_format: cannot encode a training sample with {cfg.policy.model!r} in "
                           f"format {cfg.policy.prompt_format}: {str(e).splitlines()[0][:160]}"]
    return tokenizer, []


def _exists(path: str) -> bool:
    """Whether a config's path names something, False for names no file system takes (too long,
    `~nobody/x`): those are reported as missing, not as a traceback."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError, RuntimeError):
        return False
