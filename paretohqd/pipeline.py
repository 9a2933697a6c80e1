"""`paretohqd run CONFIG`: prepare -> score -> method.train -> evaluate -> report, in one run folder.

`method:` names what trains the per-preference models (`paretohqd.methods.METHODS`): ParetoHqD,
an ablation or a baseline. Preparing, scoring, evaluating and the report are the same for all.
Each step is recorded in the run folder's manifest and skipped once done (`runfolder.RunFolder`).
`evaluate_run` is `paretohqd evaluate RUN`: the last two steps on a finished run.
"""

from __future__ import annotations

from pathlib import Path

from paretohqd import methods
from paretohqd.config import Config, ConfigError
from paretohqd.data.prepare import prepare, split_heldout
from paretohqd.devices import device_name, init_processes
from paretohqd.evaluate.answer import evaluate
from paretohqd.io import read_table, write_parquet
from paretohqd.policy.load import load_tokenizer
from paretohqd.policy.sft import check_report_to
from paretohqd.progress import console
from paretohqd.report import write_report
from paretohqd.rewards import OFFLINE, head_marker
from paretohqd.rewards.heads import ensure_trained
from paretohqd.rewards.score import write_scores
from paretohqd.runfolder import RunFolder


def run(cfg: Config) -> Path:
    """Run (or resume) every step of `cfg.method`; returns the run folder.

    Under `torchrun` / `accelerate launch` every process calls this: they form one group
    (`devices.init_processes`), train together, and the main process alone does the rest.

    Raises:
        ConfigError: an unknown method or a setting it contradicts, a config that differs from the
            run folder's, a batch that does not split over the processes, a GRPO method under a
            launcher, or a `train.report_to` tracker that is not installed.
        LaunchError: several processes were launched but could not form a group.
    """
    cfg = methods.configure(cfg)
    check_report_to(cfg.train)
    _join_processes()
    r = RunFolder(cfg)
    if cfg.train.batch_size % r.n_devices:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must divide by the number of processes "
                          f"({r.n_devices}): each step's batch is split over them")
    if r.n_devices > 1 and not methods.several_processes(cfg):
        raise ConfigError(f"method {cfg.method!r} trains with GRPO, which runs on one process here; "
                          f"launch it without torchrun / accelerate launch")
    console.print(f"run folder: {r.root}  device: {device_name()} x{r.n_devices}  seed: {cfg.seed}")
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    console.print(f"objectives: {r.objectives}; {len(r.preferences)} preferences; k = {cfg.select.k}")

    def prepare_step() -> None:
        df, counts = prepare(cfg.data, tokenizer, r.path("data", "all.parquet"))
        train_df, heldout = split_heldout(df, cfg.evaluate.prompts, cfg.seed)
        write_parquet(heldout, r.heldout)
        write_parquet(train_df, r.train_data)
        console.print(f"  {counts['kept']:,} samples; {len(heldout)} prompts held out ({len(train_df):,} samples left)")

    r.step("prepare", r.train_data, prepare_step)
    offline = [n for n in cfg.rewards.models.values() if n in OFFLINE]
    if offline:
        # heads are shared by every run on this machine (rewards.dir): trained once, then skipped;
        # the done-marker is a missing head's, or any head's if none is missing
        missing = [n for n in offline if not head_marker(cfg.rewards, n).exists()]
        r.step("rewards", head_marker(cfg.rewards, (missing or offline)[0]),
               lambda: ensure_trained(cfg.rewards, offline, sources=cfg.data.sources))
    r.step("score", r.scores, lambda: write_scores(cfg, read_table(r.train_data), r.scores))
    methods.module(cfg).train(r, tokenizer)
    _evaluate_and_report(r, tokenizer)
    return r.root


def evaluate_run(cfg: Config, root: str | Path) -> Path:
    """`paretohqd evaluate RUN`: evaluate a trained run (timed into its manifest), write the report.

    Returns:
        The path of RUN/report.json.
    """
    _join_processes()
    r = RunFolder(methods.configure(cfg), root)
    return _evaluate_and_report(r, load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code))


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
    path = write_report([r.root])  # every time, after the step, so its compute includes evaluate's own time
    r.print_times()
    return path
