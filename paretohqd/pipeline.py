"""`paretohqd run CONFIG`: prepare -> score -> select -> stage 1 -> stage 2 -> evaluate -> report.

With `method:` an ablation changes a step (`stage1-only`, `scalarised`, `full-data`), and a
baseline (`ric`, `rewarded-soups`, `morlhf`, see `paretohqd.baselines`) replaces selection and
both stages with its own training; preparing, scoring, evaluating and the report stay the same.

Every step writes its outputs into the run folder (runs/NAME/) atomically and is recorded in
`manifest.json` with its wall and device time. A rerun skips finished steps; a killed run resumes
from the last finished step, and training resumes from its last checkpoint inside a step.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils.memory import clear_device_cache
from rich.console import Console
from rich.table import Table

from paretohqd.baselines import BASELINES
from paretohqd.config import Config, ConfigError, dump_config
from paretohqd.data.prepare import prepare, prompt_id, sample_id
from paretohqd.io import read_table, write_json, write_parquet, write_text
from paretohqd.models import load_tokenizer
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.pareto.select import select_table

console = Console()


# Run folder --------------------------------------------------------------------------------------


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def manifest_entry(wall: float, n_devices: int) -> dict:
    """A finished step's manifest record: wall seconds, the device and its count, device seconds."""
    # device time: what the paper reports as GPU hours (wall x devices); on CPU, the machine's time
    return {"wall_s": round(wall, 3), "device": device_name(), "n_devices": n_devices,
            "device_s": round(wall * n_devices, 3),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


class RunFolder:
    """The run's folder and manifest: which steps finished, and what each cost."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root = Path(cfg.runs_dir) / cfg.name
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_config()  # every process checks; all write the same bytes atomically
        manifest = self.root / "manifest.json"
        self.manifest = json.loads(manifest.read_text()) if manifest.exists() else {"steps": {}}
        self.n_devices = self.state.num_processes

    @property
    def state(self) -> PartialState:
        # one process, or one per device under `accelerate launch`; asked afresh each time
        # because the trainer may reset accelerate's shared state between models
        return PartialState()

    def _check_config(self) -> None:
        # a run folder holds one config: mixing outputs of two configs would report nonsense
        path, text = self.root / "config.yaml", dump_config(self.cfg)
        if path.exists() and path.read_text() != text:
            import yaml

            old, new = _flatten(yaml.safe_load(path.read_text())), _flatten(yaml.safe_load(text))
            # keys a newer paretohqd added (absent from the old file) take their defaults: not a change
            keys = sorted(k for k in old if old[k] != new.get(k))
            if keys:
                raise ConfigError(f"{self.root} was made with another config (differs in: {', '.join(keys)}); "
                                  f"resume with the same config, or start a new run with --set name=NEW")
        write_text(text, path)
        write_json({"seed": self.cfg.seed, "torch": torch.__version__}, self.root / "seed.json")

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def step(self, name: str, done: Path, fn: Callable[[], object], *, every_process: bool = False) -> None:
        """Run `fn` unless `done` exists; record wall time and device time in the manifest.

        Under `accelerate launch` only training runs on every process (`every_process`); the
        main process alone runs the other steps while the rest wait, so no file is written twice.
        """
        if done.exists():
            console.print(f"[dim]skip {name} (done)[/]")
            return
        console.print(f"[bold]{name}[/]")
        t0 = time.perf_counter()
        if every_process or self.state.is_main_process:
            fn()
            # models a step loaded sit in reference cycles (trainers, hooks) until the collector runs:
            # free them now, so the next step (or the next method of `compare`) starts with the memory
            clear_device_cache(garbage_collection=True)
        self.state.wait_for_everyone()
        wall = time.perf_counter() - t0
        if not self.state.is_main_process:
            return
        self.manifest["steps"][name] = manifest_entry(wall, self.n_devices)
        write_json(self.manifest, self.path("manifest.json"))

    def print_times(self) -> None:
        table = Table(title=f"where the time went ({self.root})")
        for col in ("step", "wall s", "device s"):
            table.add_column(col, justify="left" if col == "step" else "right")
        steps = self.manifest["steps"]
        for name, s in steps.items():
            table.add_row(name, f"{s['wall_s']:.1f}", f"{s['device_s']:.1f}")
        table.add_row("total", f"{sum(s['wall_s'] for s in steps.values()):.1f}",
                      f"{sum(s['device_s'] for s in steps.values()):.1f}")
        console.print(table)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# Steps -------------------------------------------------------------------------------------------


def split_heldout(df: pd.DataFrame, n_prompts: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `n_prompts` whole prompts (every sample of theirs) for evaluation.

    Returns (training samples, held-out prompts with columns prompt_id, prompt, messages).
    """
    pids = df["prompt"].map(prompt_id)
    unique = np.sort(pids.unique())
    if n_prompts >= len(unique):
        raise ConfigError(f"evaluate.prompts ({n_prompts}) must be below the {len(unique)} distinct prompts "
                          "in the data, or nothing is left to train on")
    held = set(np.random.default_rng(seed).choice(unique, n_prompts, replace=False))
    mask = pids.isin(held)
    heldout = df[mask].assign(prompt_id=pids[mask]).drop_duplicates("prompt_id")
    return df[~mask].reset_index(drop=True), heldout[["prompt_id", "prompt", "messages"]].reset_index(drop=True)


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


def _score(cfg: Config, df: pd.DataFrame, out: Path) -> None:
    from paretohqd.objectives.score import write_scores

    write_scores(cfg, df, out)


def _select(cfg: Config, scores_path: Path, out_dir: Path, k: int) -> None:
    scores = read_table(scores_path)
    select_cfg = cfg.select.model_copy(update={"k": k})
    selection, info = select_table(scores, list(cfg.rewards.models), select_cfg, source=str(scores_path))
    console.print(f"pool: {info['pool_size']:,} of {info['n_points']:,} samples in the top {info['layers_used']} "
                  f"layer(s); {info['k_used']} selected for each of {info['n_preferences']} preferences")
    write_json(info, out_dir / "selection.json")
    write_parquet(selection, out_dir / "selection.parquet")


def _select_random(cfg: Config, scores_path: Path, out_dir: Path, steps: int) -> None:
    """The `full-data` ablation's "selection": for each preference, samples drawn uniformly from
    the whole table instead of the Pareto data, as many as its training reaches.

    The SFT loop walks a seeded shuffle of its samples, `steps x batch_size` of them; training on
    the whole table is therefore the same, in distribution, as training on that many samples
    drawn without replacement, which is what this writes (and it spares encoding the rest).
    """
    scores = read_table(scores_path)
    preferences = preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))  # (P, M)
    n = min(len(scores), steps * cfg.train.batch_size)
    parts = [pd.DataFrame({"preference_index": i, "weights": [w.tolist()] * n,
                           "id": scores["id"].sample(n=n, random_state=cfg.seed + i).to_numpy(),
                           "layer": -1, "distance": np.nan}) for i, w in enumerate(preferences)]
    write_json({"method": "full-data", "n_points": len(scores), "per_preference": n,
                "n_preferences": len(preferences)}, out_dir / "selection.json")
    write_parquet(pd.concat(parts, ignore_index=True), out_dir / "selection.parquet")


def _train_preference(cfg: Config, tokenizer, scores_path: Path, selection_path: Path, index: int,
                      out: Path, steps: int, init_adapter: Path | None) -> None:
    from paretohqd.train.sft import encode, train

    scores = read_table(scores_path).set_index("id")
    selection = read_table(selection_path)
    ids = selection.loc[selection["preference_index"] == index, "id"]
    rows = scores.loc[ids]
    samples = [encode(tokenizer, list(m), r, cfg.train.max_length) for m, r in zip(rows["messages"], rows["response"])]
    t0 = time.perf_counter()

    def show(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            console.print(f"  step {step}/{steps}  loss {loss:.3f}  {(time.perf_counter() - t0) / step:.1f} s/step")

    train(samples, out, policy=cfg.policy, cfg=cfg.train, steps=steps, seed=cfg.seed + index,
          pad_id=tokenizer.pad_token_id, init_adapter=init_adapter, on_step=show)


def _generate_pool(cfg: Config, tokenizer, prompts: pd.DataFrame, adapter: Path, index: int, out: Path) -> None:
    from paretohqd.train.generate import generate, load_for_generation

    model = load_for_generation(cfg.policy, adapter, lora=cfg.train.lora, dtype=cfg.generate.dtype)
    responses, stats = generate(model, tokenizer, [list(m) for m in prompts["messages"]], cfg.generate,
                                seed=cfg.seed + index, label=f"pref {index:02d} answers")
    console.print(f"  {stats['new_tokens']:,} tokens at {stats['tokens_per_s']:.1f} tokens/s")
    df = prompts[["prompt", "messages"]].assign(response=responses, source=f"stage1:pref-{index:02d}",
                                                 preference_index=index, model=str(adapter))
    df = df[df["response"].str.len() > 0]
    df.insert(0, "id", [sample_id(p, r) for p, r in zip(df["prompt"], df["response"])])
    write_parquet(df, out)


# The job -----------------------------------------------------------------------------------------


def run(cfg: Config) -> Path:
    """Run (or resume) every step of ParetoHqD; returns the run folder."""
    r = RunFolder(cfg)
    console.print(f"run folder: {r.root}  device: {device_name()} x{r.n_devices}  seed: {cfg.seed}")
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    objectives = list(cfg.rewards.models)
    preferences = preferences_from_config(cfg.select.preferences, len(objectives))  # (P, M)
    console.print(f"objectives: {objectives}; {len(preferences)} preferences; k = {cfg.select.k}")

    def prepare_step() -> None:
        df, counts = prepare(cfg.data, tokenizer, r.path("data", "all.parquet"))
        train_df, heldout = split_heldout(df, cfg.evaluate.prompts, cfg.seed)
        write_parquet(heldout, r.path("data", "heldout.parquet"))
        write_parquet(train_df, r.path("data", "train.parquet"))
        console.print(f"  {counts['kept']:,} samples; {len(heldout)} prompts held out ({len(train_df):,} samples left)")

    r.step("prepare", r.path("data", "train.parquet"), prepare_step)
    offline = [n for n in cfg.rewards.models.values() if n.startswith("minilm-")]
    if offline:
        from paretohqd.objectives.train import ensure_trained

        # heads are shared by every run on this machine (rewards.dir): trained once, then skipped
        r.step("rewards", _rewards_marker(cfg, offline),
               lambda: ensure_trained(cfg.rewards, offline, sources=cfg.data.sources))
    r.step("score", r.path("data", "scores.parquet"),
           lambda: _score(cfg, read_table(r.path("data", "train.parquet")), r.path("data", "scores.parquet")))
    if cfg.method in BASELINES:
        from paretohqd import baselines

        baselines.train(cfg, r, tokenizer)
    else:
        _paretohqd(cfg, r, tokenizer, preferences)
    from paretohqd.evaluate.run import evaluate
    from paretohqd.report import write_report

    r.step("evaluate", r.path("evaluate", "responses.parquet"), lambda: evaluate(cfg, r.root))
    if r.state.is_main_process:
        write_report([r.root])  # every time, after the step, so its compute includes evaluate's own time
        r.print_times()
    return r.root


def _paretohqd(cfg: Config, r: RunFolder, tokenizer, preferences: np.ndarray) -> None:
    """Selection, stage 1 and stage 2: ParetoHqD and its ablations (`full-data` draws at random)."""
    r.step("select", r.path("stage1", "selection.parquet"),
           _selector(cfg, r.path("data", "scores.parquet"), r.path("stage1"), cfg.select.k, cfg.train.steps))
    _train_stage(cfg, r, tokenizer, preferences, "stage1", r.path("data", "scores.parquet"), cfg.train.steps)
    if cfg.stage2.enabled:
        _stage2(cfg, r, tokenizer, preferences)


def _rewards_marker(cfg: Config, names: list[str]) -> Path:
    """Done-marker of the rewards step: a missing head's config file, or any head's if none is missing."""
    from paretohqd.objectives import head_marker

    missing = [n for n in names if not head_marker(cfg.rewards, n).exists()]
    return head_marker(cfg.rewards, missing[0] if missing else names[0])


def _stage2(cfg: Config, r: RunFolder, tokenizer, preferences: np.ndarray) -> None:
    k2 = cfg.stage2.k or max(cfg.select.k // 2, 1)
    train_df = read_table(r.path("data", "train.parquet"))
    prompts = train_df.drop_duplicates("prompt")
    n = min(cfg.stage2.prompts, len(prompts))
    if n < cfg.stage2.prompts:
        console.print(f"[yellow]stage2.prompts = {cfg.stage2.prompts:,} but the data holds {n:,} distinct "
                      f"training prompts: using all of them[/]")
    prompts = prompts.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    reps = representatives(preferences)
    pools = []
    for i in reps:
        pool = r.path("stage2", f"generated-pref-{i:02d}.parquet")
        pools.append(pool)
        r.step(f"stage2/generate pref-{i:02d}", pool,
               lambda i=i, pool=pool: _generate_pool(cfg, tokenizer, prompts, r.path("stage1", f"pref-{i:02d}"), i, pool))

    def score_pool() -> None:
        df = pd.concat([read_table(p) for p in pools], ignore_index=True).drop_duplicates("id")
        _score(cfg, df, r.path("stage2", "scores.parquet"))

    r.step("stage2/score", r.path("stage2", "scores.parquet"), score_pool)
    r.step("stage2/select", r.path("stage2", "selection.parquet"),
           _selector(cfg, r.path("stage2", "scores.parquet"), r.path("stage2"), k2, cfg.stage2.steps))
    _train_stage(cfg, r, tokenizer, preferences, "stage2", r.path("stage2", "scores.parquet"), cfg.stage2.steps,
                 init_stage="stage1")


def _selector(cfg: Config, scores_path: Path, out_dir: Path, k: int, steps: int) -> Callable[[], None]:
    """The selection step: Pareto rays (or the scalarised ablation), or random draws for `full-data`."""
    if cfg.method == "full-data":
        return lambda: _select_random(cfg, scores_path, out_dir, steps)
    return lambda: _select(cfg, scores_path, out_dir, k)


def _train_stage(cfg: Config, r: RunFolder, tokenizer, preferences: np.ndarray, stage: str, scores_path: Path,
                 steps: int, init_stage: str | None = None) -> None:
    """One model per preference on its selection; stage 2 continues from the stage-1 adapters."""
    for i in range(len(preferences)):
        out = r.path(stage, f"pref-{i:02d}")
        init = r.path(init_stage, f"pref-{i:02d}") if init_stage else None
        r.step(f"{stage}/pref-{i:02d} w={preferences[i].round(3).tolist()}", out / "train.json",
               lambda i=i, out=out, init=init: _train_preference(
                   cfg, tokenizer, scores_path, r.path(stage, "selection.parquet"), i, out, steps, init),
               every_process=True)


def final_models(cfg: Config, root: Path) -> list[dict]:
    """Each preference's final model: `model` name, `weights`, `adapter` folder, `done` marker
    (exists once it is finished) and `tag` (text added to the prompt: RiC's desired rewards).

    For ParetoHqD and its ablations, stage 2's folder if it ran, else stage 1's.
    """
    if cfg.method in BASELINES:
        from paretohqd import baselines

        return baselines.final_models(cfg, root)
    preferences = preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))  # (P, M)
    stage = "stage2" if cfg.stage2.enabled else "stage1"
    return [{"model": f"pref-{i:02d}", "weights": w, "adapter": root / stage / f"pref-{i:02d}",
             "done": root / stage / f"pref-{i:02d}" / "train.json", "tag": None} for i, w in enumerate(preferences)]
