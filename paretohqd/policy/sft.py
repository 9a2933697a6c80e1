"""Supervised fine-tuning on a preference's selected samples, loss on response tokens only.

A plain loop on `accelerate` (devices, mixed precision, DDP under `torchrun` / `accelerate
launch`), measured faster on CPU than TRL's SFTTrainer for the same maths (benchmarks/train.py)
because it:
- left-pads batches, so every response ends at the last position, and asks the model for logits
  of the last (longest response) positions only (`logits_to_keep`): on HH the prompt is most of
  the sequence, and the 49k-vocabulary head is a large share of a small model's compute;
- splits each step's batch into micro-batches of similar length under a token budget
  (little padding), accumulating gradients, with the loss normalised over the whole step;
- keeps gradient checkpointing off (small models fit without it), and on CPU uses eager
  attention (PyTorch's CPU flash-attention backward is slower at these lengths).
The loss is the mean token cross-entropy over response tokens, as SFTTrainer's completion_only_loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from paretohqd.config import Config, ConfigError, PolicyConfig, TrainConfig
from paretohqd.devices import native_bf16
from paretohqd.io import atomic_dir, file_digest, write_json
from paretohqd.policy.batches import IGNORE, collate, encode, micro_batches, on_device, step_plan
from paretohqd.policy.load import load_policy, merge_adapter
from paretohqd.policy.prompts import resolve_format, with_tag
from paretohqd.progress import console

# accelerate's prepare() asks transformers a deprecated question on every model: noise, not news
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


# Data --------------------------------------------------------------------------------------------


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over response tokens (the caller divides by the count)."""
    keep = int(batch["keep"])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=keep).logits  # (B, keep, V)
    # logits[:, j] predicts the token after position T-keep+j
    targets = batch["labels"][:, -keep + 1:] if keep > 1 else batch["labels"][:, :0]  # (B, keep-1)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")


# Model -------------------------------------------------------------------------------------------


def lora_config(cfg: TrainConfig):
    """PEFT LoraConfig of the `train` section (SFT here, and MORLHF's GRPO)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")


def build_model(policy: PolicyConfig, cfg: TrainConfig, init_adapter: str | Path | None = None,
                start: str | Path | None = None):
    """The policy with fresh LoRA adapters, those of `init_adapter` (trainable), or all weights; with
    `start` (an adapter, LoRA only) the fresh adapters go on the policy with `start` merged into it."""
    from peft import PeftModel, get_peft_model

    attention = cfg.attention if cfg.attention != "auto" else (None if torch.cuda.is_available() else "eager")
    # a fully fine-tuned checkpoint is a whole model
    source = str(init_adapter) if init_adapter is not None and not cfg.lora else policy.model
    model = load_policy(source, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code,
                        attn_implementation=attention)
    if start is not None:
        model = merge_adapter(model, start)
    if cfg.lora:
        if init_adapter is not None:
            return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        return get_peft_model(model, lora_config(cfg))
    return model


def mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "bf16" if native_bf16("cuda" if torch.cuda.is_available() else "cpu") else "no"


def check_report_to(cfg: TrainConfig) -> None:
    """Raise ConfigError if `cfg.report_to` names a tracker whose package is not installed
    (accelerate would silently log nowhere)."""
    from accelerate.tracking import get_available_trackers

    if cfg.report_to != "none" and cfg.report_to not in {str(t) for t in get_available_trackers()}:
        raise ConfigError(f"train.report_to: {cfg.report_to} is not installed here; `pip install {cfg.report_to}` "
                          f"or set train.report_to=none")


def make_accelerator(precision: str, log_with: str | None = None, log_dir: Path | None = None) -> Accelerator:
    """An Accelerator with `precision`, safe to make again in the same process (SFT here, MODPO's loop)."""
    # accelerate keeps one state per process; a process may train with several precisions (tests,
    # `compare`). Alone, it starts afresh; in a launcher's group (`devices.init_processes`) the
    # process group must stay, so only the accelerator part of the state is reset.
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state(reset_partial_state=PartialState().num_processes == 1)
    return Accelerator(mixed_precision=precision, log_with=log_with, project_dir=log_dir)


# Loop --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """What `train_loop` needs of a loss over items (SFT's samples, MODPO's pairs), as TRL's trainers
    override `compute_loss` over one loop.

    `loss(model, acc, idx)` returns a micro-batch's summed loss and its `counts` (floats, in that
    order); the loop divides the loss by `size` of the whole step, so each step's loss is a mean over
    what `size` counts (response tokens, pairs). A step's counts, summed over its micro-batches and
    processes, go to `metrics` with its number of items; what it returns is logged and passed to
    `on_step` by name, and `summary` turns every step's metrics into `train.json` entries.
    """

    lengths: list[int]  # (n_items,) tokens an item costs in a micro-batch
    max_tokens: int  # padded tokens per micro-batch
    size: Callable[[list[int]], float]  # a step's items -> what its loss is a mean over
    loss: Callable[[Any, Accelerator, list[int]], tuple[torch.Tensor, list[float]]]
    counts: tuple[str, ...] = ("tokens",)  # `tokens` (the micro-batch's real tokens, for tokens/s) first
    metrics: Callable[[dict[str, float], int], dict[str, float]] = lambda counts, n_items: {}
    summary: Callable[[list[dict[str, float]]], dict] = lambda history: {}


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """The learning rate at 0-based `step` as a share of its peak: a linear warm-up over
    `warmup_steps`, then a linear decay to 0 at `steps`; never above the peak (the decay is capped
    at 1 during the warm-up: uncapped, 12 steps with 2 of warm-up peaked at 1.1x `train.lr`).

    Examples:
        >>> [round(lr_factor(s, 3, 0), 3) for s in range(3)]
        [1.0, 0.667, 0.333]
        >>> [round(lr_factor(s, 6, 2), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    warm = min((step + 1) / max(warmup_steps, 1), 1.0)
    return warm * min(1.0, max(0.0, (steps - step) / max(steps - warmup_steps, 1)))


def train_loop(objective: Objective, out: Path, *, policy: PolicyConfig, cfg: TrainConfig, steps: int, seed: int,
               save: Callable[[Any, Path, dict], None], init_adapter: str | Path | None = None,
               start: str | Path | None = None, on_step: Callable[..., None] | None = None, record: dict | None = None, lr_key: str = "train.lr",
               log_dir: Path | None = None, log_run: str = "run", log_tag: str = "train") -> dict:
    """Train one model on `objective` with `cfg`'s optimiser settings (lr, batch_size, warm-up, LoRA,
    precision, checkpoints) and `save(model, out, stats)` it with its `train.json` (callers pass
    `save_model` as their module names it, so that it can be replaced there, e.g. by a test's kill).
    `start`: an adapter merged into the policy before the fresh one is added (`build_model`).

    Resumes from `out/../<name>.ckpt` if a killed run left one; returns the training stats: `record`,
    each step's loss and gradient norm (both the whole step's, over every process) and `summary`'s.
    With `cfg.report_to` set and a `log_dir`, each step's loss, learning rate, gradient norm, tokens/s
    and metrics go to that tracker as `{log_tag}/loss`, ... in the tracker run `log_run` (main process).
    `on_step(step, loss, **metrics)` is called after each step.
    (Over 60 lines on purpose: resume, step, checkpoint and logging read in order, top to bottom.)
    """
    if (out / "train.json").exists():
        return json.loads((out / "train.json").read_text())
    tracking = cfg.report_to != "none" and log_dir is not None
    acc = make_accelerator(mixed_precision(cfg), cfg.report_to if tracking else None, log_dir)
    if tracking:
        acc.init_trackers(log_run)
    set_seed(seed)
    model, params, opt, sched = _optimised_model(acc, policy, cfg, steps, init_adapter, start)
    ckpt = out.with_name(out.name + ".ckpt")
    start = load_checkpoint(ckpt, acc.unwrap_model(model), opt, sched)
    if start:
        console.print(f"  resumed from the checkpoint at step {start}/{steps} ({ckpt})")
    plan = step_plan(objective.lengths, steps, cfg.batch_size, seed)
    losses, grad_norms, history, t0, n_tokens = [], [], [], time.perf_counter(), 0
    model.train()
    for step in range(start, steps):
        t_step, lr = time.perf_counter(), opt.param_groups[0]["lr"]  # this step's rate (the scheduler moves it after)
        step_loss, counts = _accumulate(model, acc, objective, plan[step])
        # the whole step's gradient norm (synced over processes, unscaled under fp16), clipping nothing:
        # to watch, and the same number whether one process or several share the step
        grad_norm = acc.clip_grad_norm_(params, float("inf")).item()
        opt.step()
        sched.step()
        opt.zero_grad()
        n_tokens += counts["tokens"]
        metrics = objective.metrics(counts, len(plan[step]))
        acc.log({f"{log_tag}/{k}": v for k, v in {"loss": step_loss, "lr": lr, "grad_norm": grad_norm, **metrics,
                 "tokens_per_s": counts["tokens"] / (time.perf_counter() - t_step)}.items()}, step=step + 1)
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"loss is {step_loss} at step {step + 1}; lower {lr_key}")
        losses.append(step_loss)
        grad_norms.append(grad_norm)
        history.append(metrics)
        if on_step:
            on_step(step + 1, step_loss, **metrics)
        if (step + 1) % cfg.save_every == 0 and step + 1 < steps and acc.is_main_process:
            save_checkpoint(ckpt, acc.unwrap_model(model), opt, sched, step + 1)
    seconds = time.perf_counter() - t0
    stats = {**(record or {}), "steps": steps, "resumed_at": start, "loss_first": (losses or [None])[0],
             "loss_last": (losses or [None])[-1], "seconds": seconds,
             "tokens_per_s": n_tokens / seconds if seconds else None,
             "mixed_precision": acc.mixed_precision, "processes": acc.num_processes,
             "losses": losses, "grad_norms": grad_norms, **objective.summary(history)}  # per step from resumed_at
    if acc.is_main_process:
        save(acc.unwrap_model(model), out, stats)
        shutil.rmtree(ckpt, ignore_errors=True)
    # not acc.end_training(): it also ends the process group, which the run's later steps still need
    for tracker in acc.trackers:
        tracker.finish()
    acc.wait_for_everyone()
    return stats


def _optimised_model(acc: Accelerator, policy: PolicyConfig, cfg: TrainConfig, steps: int,
                     init_adapter: str | Path | None, start: str | Path | None):
    """The model to train (prepared by `acc`), its trainable parameters, AdamW optimiser (prepared)
    and learning-rate schedule (`lr_factor`)."""
    model = build_model(policy, cfg, init_adapter, start)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.warmup_steps))
    model, opt = acc.prepare(model, opt)
    return model, params, opt, sched


def _accumulate(model, acc: Accelerator, objective: Objective, items: list[int]) -> tuple[float, dict[str, float]]:
    """One step's forward and backward passes over its `items`, this process's share in micro-batches;
    returns the step's loss and counts, each summed over every process."""
    # the loss is the mean over the whole step, on every device: DDP averages gradients over
    # processes, hence the * num_processes
    denom = objective.size(items) / acc.num_processes
    chunks = micro_batches(items[acc.process_index::acc.num_processes], objective.lengths, objective.max_tokens)
    step_loss, counts = 0.0, [0.0] * len(objective.counts)
    for j, idx in enumerate(chunks):
        # gradients sync across devices once per step, on the last micro-batch
        with acc.no_sync(model) if j < len(chunks) - 1 else contextlib.nullcontext():
            with acc.autocast():
                loss, batch_counts = objective.loss(model, acc, idx)
                loss = loss / denom
            acc.backward(loss)
        step_loss += loss.item() / acc.num_processes
        counts = [c + b for c, b in zip(counts, batch_counts)]
    # each process holds its share of the step's loss and counts: the sums are the step's
    total = acc.reduce(torch.tensor([step_loss, *counts], dtype=torch.float64, device=acc.device), "sum")
    return total[0].item(), dict(zip(objective.counts, total[1:].tolist()))


def finetune(
    samples: list[tuple[list[int], int]],
    out: Path,
    *,
    policy: PolicyConfig,
    cfg: TrainConfig,
    steps: int,
    seed: int,
    pad_id: int,
    init_adapter: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    **log,
) -> dict:
    """Train one model on encoded samples with the mean token cross-entropy over every response token
    of a step (`train_loop`), and save it to `out` (atomically, with `train.json`).
    `log`: `train_loop`'s log_dir, log_run, log_tag."""
    lengths = [len(ids) for ids, _ in samples]
    n_answer = [len(ids) - n_prompt for ids, n_prompt in samples]

    def loss(model, acc: Accelerator, idx: list[int]) -> tuple[torch.Tensor, list[float]]:
        batch = collate([samples[i] for i in idx], pad_id)
        return completion_loss(model, on_device(batch, acc.device)), [float(batch["attention_mask"].sum())]

    objective = Objective(lengths, cfg.micro_batch_tokens, lambda items: sum(n_answer[i] for i in items), loss)
    return train_loop(objective, out, policy=policy, cfg=cfg, steps=steps, seed=seed, save=save_model,
                      init_adapter=init_adapter, on_step=on_step, record={"samples": len(samples)}, **log)


def finetune_rows(cfg: Config, tokenizer, rows, out: Path, *, steps: int, seed: int,
                  init_adapter: str | Path | None = None, tags: list[str] | None = None, **log) -> dict:
    """Encode a table's (messages, response) rows (each prompt with its RiC tag, if `tags`) and
    `finetune` one model on them with the run's settings, printing loss and speed as it goes.
    `log`: `finetune`'s log_dir, log_run, log_tag (`RunFolder.log_to`)."""
    conversations = [list(m) for m in rows["messages"]]
    if tags is not None:
        conversations = [with_tag(c, t) for c, t in zip(conversations, tags)]
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
    samples = [encode(tokenizer, c, r, cfg.train.max_length, fmt) for c, r in zip(conversations, rows["response"])]
    t0 = time.perf_counter()

    def show(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            console.print(f"  step {step}/{steps}  loss {loss:.3f}  {(time.perf_counter() - t0) / step:.1f} s/step")

    return finetune(samples, out, policy=cfg.policy, cfg=cfg.train, steps=steps, seed=seed,
                    pad_id=tokenizer.pad_token_id, init_adapter=init_adapter, on_step=show, **log)


def save_model(model, out: Path, stats: dict) -> None:
    """The adapter (or the whole model) and `train.json` with `stats`, written to `out` atomically."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(stats, tmp / "train.json")


def save_checkpoint(ckpt: Path, model, opt, sched, step: int) -> None:
    """A resumable checkpoint (weights, optimizer and scheduler, with each file's checksum), atomically."""
    with atomic_dir(ckpt) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optimizer.pt")
        # sizes and checksums: a garbled file that still parses must not be trained on
        files = {str(f.relative_to(tmp)): file_digest(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        write_json({"step": step, "files": files}, tmp / "state.json")


def load_checkpoint(ckpt: Path, model, opt, sched) -> int:
    """Restore a checkpoint into model, optimizer and scheduler; returns its step (0 without one).
    A checkpoint that cannot be read is deleted, with a warning: training then starts from step 0."""
    if not (ckpt / "state.json").exists():
        return 0
    try:
        return _restore(ckpt, model, opt, sched)
    except Exception as e:  # safetensors, torch.load and json each raise their own kind
        console.print(f"[yellow]warning: discarding checkpoint {ckpt}, which cannot be read "
                      f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]}); training from step 0[/]")
        shutil.rmtree(ckpt, ignore_errors=True)
        return 0


def _restore(ckpt: Path, model, opt, sched) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    # everything is checked and read before anything is applied: a bad file leaves the fresh model as it was
    record = json.loads((ckpt / "state.json").read_text())
    for rel, want in record.get("files", {}).items():
        if file_digest(ckpt / rel) != want:
            raise ValueError(f"{rel} differs from its record")
    weights = ckpt / "model" / ("adapter_model.safetensors" if hasattr(model, "peft_config") else "model.safetensors")
    state = load_file(weights)
    # weights_only: tensors and plain containers, no arbitrary objects (our own file, still no pickle code)
    extra = torch.load(ckpt / "optimizer.pt", weights_only=True)
    step = int(record["step"])
    if hasattr(model, "peft_config"):
        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state, strict=False)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    return step
