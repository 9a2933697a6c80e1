"""MORLHF: online RL on the scalarised reward w . r, one LoRA model per preference.

As RiC's MORLHF (`ppo/morlhf.py`, whose `base_model_name` is "the path to the sft model; need to
merge if using lora"), RL starts from an SFT model (`morlhf.init: sft`): the run's SFT model
(`methods.start`, shared with Rewarded Soups' RL and MODPO), merged into the base for RL so that the
KL term holds the policy to the SFT model, not to the base. Each preference's RL adapter is then
summed with the SFT adapter exactly (`start.save_on_start`, rank r_sft + r_rl), so its folder is a
plain adapter on the base like every other method's.

The paper's MORLHF runs PPO on w . r; we use TRL's GRPOTrainer (no value model, so it fits small
machines): for each prompt `morlhf.num_generations` completions are sampled from the current
policy, every run reward model scores them, and the advantage is w . r normalised within the
prompt's group. `reward_funcs` are wrappers around the run's reward models and `reward_weights`
= w (objectives of weight 0 are not scored). Each reward is first z-normalised with the mean and
std of the run's scored training data, as RiC's MORLHF does, so w weighs objectives of equal
spread rather than whatever scale each reward model happens to have. A KL term (`morlhf.beta`) to
the base policy keeps the policy near it, as in RLHF.

Prompts are training prompts only (`data/train.parquet`); held-out prompts are never seen. A run
killed inside one preference's RL restarts that preference (no mid-RL checkpoints).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from paretohqd.config import Config
from paretohqd.io import atomic_dir, read_table, write_json
from paretohqd.methods import start
from paretohqd.methods.contract import per_preference
from paretohqd.methods.start import save_on_start
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.load import merge_adapter
from paretohqd.policy.prompts import HH_STOP, cut_at_stop, hh_text, resolve_format
from paretohqd.rewards.normalise import Normaliser
from paretohqd.runfolder import FinalModel, RunFolder, pref_name


def preferences(cfg: Config) -> np.ndarray:
    """(P, M) preferences MORLHF trains."""
    return preferences_from_config(cfg.morlhf.preferences, len(cfg.rewards.models))


def reward_funcs(r: RunFolder, weights: np.ndarray) -> tuple[list, list[float]]:
    """One GRPO reward function per objective of nonzero weight, and those weights.

    Each function scores (HH prompt, completion) with the run's reward model and returns the
    reward z-normalised by the training data's mean and std.
    """
    from paretohqd.rewards import load_reward_models

    cfg = r.cfg
    models = load_reward_models(cfg.rewards, data=cfg.data)
    z = Normaliser.of_scores(r.scores, list(models))
    funcs, used = [], []
    for j, ((name, model), w) in enumerate(zip(models.items(), weights)):
        if w == 0:
            continue
        mean, std = float(z.mean[j]), float(z.std[j])  # plain floats: a reward model's float32 scores stay float32

        def score(prompts, completions, hh_prompt, model=model, mean=mean, std=std, **_) -> list[float]:
            # conversational datasets give each completion as [{"role": "assistant", "content": ...}]
            texts = [c[-1]["content"] if isinstance(c, list) else cut_at_stop(c, [HH_STOP]) for c in completions]
            return ((model.score(hh_prompt, texts, batch_size=cfg.rewards.batch_size) - mean) / std).tolist()

        score.__name__ = name  # TRL logs each reward under its function's name
        funcs.append(score)
        used.append(float(w))
    return funcs, used


def train_preference(r: RunFolder, tokenizer, weights: np.ndarray, out: Path, *, seed: int,
                     init: Path | None = None) -> dict:
    """GRPO with LoRA on w . r, from the base or (`init`) the SFT adapter merged into it; saves the
    adapter (the SFT and RL adapters summed, with `init`) and `train.json` to `out` (atomically).
    Slightly over ~60 lines: TRL's GRPOConfig takes its settings one per line."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from paretohqd.policy.load import load_policy
    from paretohqd.policy.sft import lora_config, mixed_precision

    cfg = r.cfg
    m = cfg.morlhf
    prompts = read_table(r.train_data).drop_duplicates("prompt")
    n = min(len(prompts), m.steps * m.batch_size // m.num_generations)  # prompts the budget reaches
    prompts = prompts.sample(n=n, random_state=seed)
    # conversational prompts go through the chat template; a base model gets the raw HH transcript
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
    conversations = [list(x) for x in prompts["messages"]]
    data = Dataset.from_dict({"prompt": conversations if fmt == "chat" else [hh_text(c) for c in conversations],
                              "hh_prompt": list(prompts["prompt"])})
    funcs, used = reward_funcs(r, weights)
    tag = str(out.relative_to(r.root))  # morlhf/pref-00, or soups/objective-00
    tracking = cfg.train.report_to != "none"
    args = GRPOConfig(
        # the trainer keeps nothing there (save_strategy no) but its tracker's logs: TRL's TensorBoard
        # writes under output_dir, so with a tracker it is RUN/logs/TAG and stays
        output_dir=str(r.path("logs", tag) if tracking else out.with_name(f".{out.name}.trainer")),
        report_to=cfg.train.report_to, run_name=f"{r.root.name}/{tag}",
        max_steps=m.steps, per_device_train_batch_size=m.batch_size,
        num_generations=m.num_generations, max_completion_length=m.max_completion_length or cfg.generate.max_new_tokens,
        learning_rate=m.lr, beta=m.beta, reward_weights=used, multi_objective_aggregation=m.aggregation, temperature=m.temperature or cfg.generate.temperature or 1.0,
        top_p=cfg.generate.top_p, warmup_steps=min(cfg.train.warmup_steps, m.steps - 1), seed=seed,
        bf16=mixed_precision(cfg.train) == "bf16", use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=False,  # small models fit without it (GRPOConfig turns it on)
        logging_steps=1, save_strategy="no", disable_tqdm=True,
    )
    model = load_policy(cfg.policy.model, dtype=cfg.policy.dtype, trust_remote_code=cfg.policy.trust_remote_code)
    if init is not None:  # RL's starting point and KL reference: the SFT model, merged
        model = merge_adapter(model, init)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                          processing_class=tokenizer, peft_config=lora_config(cfg.train))
    t0 = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    stats = {"steps": m.steps, "weights": [float(w) for w in weights], "prompts": n, "seconds": time.perf_counter() - t0,
             "init": str(init) if init is not None else "base", "aggregation": m.aggregation,
             "reward_first": logs[0]["reward"] if logs else None, "reward_last": logs[-1]["reward"] if logs else None,
             "kl_last": logs[-1].get("kl") if logs else None}
    if not tracking:
        shutil.rmtree(args.output_dir, ignore_errors=True)
    if init is None:
        with atomic_dir(out) as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            write_json(stats, tmp / "train.json")
        return stats
    save_on_start(cfg.policy, init, out, stats,
                  lambda delta: trainer.model.save_pretrained(delta, safe_serialization=True))
    return stats


def train(r: RunFolder, tokenizer) -> None:
    init = start.sft_model(r, tokenizer, key="morlhf.init") if r.cfg.morlhf.init == "sft" else None
    # (before the preferences: every one starts from it)
    with r.fan_out("train"):  # the preferences are independent (one task each under `executor: ray`)
        for i, w in enumerate(preferences(r.cfg)):
            out = r.path("morlhf", pref_name(i))
            r.step(f"morlhf/{pref_name(i)} w={w.round(3).tolist()}", out / "train.json",
                   lambda w=w, out=out, i=i: train_preference(r, tokenizer, w, out, seed=r.cfg.seed + i, init=init))


def final_models(r: RunFolder) -> list[FinalModel]:
    return per_preference(r, "morlhf", preferences(r.cfg))


def rl_text(cfg: Config) -> str:
    m = cfg.morlhf
    begin = f"from SFT ({start.steps(cfg)} steps)" if m.init == "sft" else "from the base"
    return f"GRPO {begin}, {m.steps} steps x {m.batch_size} completions, beta {m.beta}, {m.aggregation}"


def describe(cfg: Config) -> str:
    return f"MORLHF ({rl_text(cfg)}, on w.r for {len(preferences(cfg))} preferences)"


def sft_samples(cfg: Config) -> int:
    """Samples x steps of the SFT start (0 for `init: base`)."""
    return start.samples(cfg) if cfg.morlhf.init == "sft" else 0


def work(cfg: Config, n_samples: int | None = None) -> dict[str, float]:
    n = len(preferences(cfg))
    return {"grpo_completions": n * cfg.morlhf.steps * cfg.morlhf.batch_size, "train_samples": sft_samples(cfg),
            "sft_start_samples": sft_samples(cfg), "models": n}


def several_processes(cfg: Config) -> bool:
    """GRPO runs on the main process alone (see `paretohqd.methods.several_processes`)."""
    return False
