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
from paretohqd.config import Config
from paretohqd.data.prepare import prepare, split_heldout, split_prompts
from paretohqd.devices import device_name, init_processes
from paretohqd.evaluate.answer import evaluate
from paretohqd.evaluate.judge import judge_run
from paretohqd.executor import attach
from paretohqd.io import InputError, read_table, write_parquet, write_text
from paretohqd.lock import hold
from paretohqd.policy.load import load_tokenizer
from paretohqd.preflight import preflight
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
    r.step("score", r.scores, lambda: write_scores(cfg, read_table(r.train_data), r.scores, labels=True, ranks=r.ranks),
           spread=True)
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
           lambda: evaluate(r, tokenizer, method.final_models(r), method.describe(r.cfg)), spread=True)
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
