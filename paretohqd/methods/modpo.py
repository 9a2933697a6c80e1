"""MODPO (Zhou et al., ACL Findings 2024, arXiv 2310.03708, "Beyond One-Preference-Fits-All"):
DPO on one objective's pair labels, with the other objectives' rewards as a margin; one LoRA model
per preference.

**The loss**, as the authors' code (github.com/ZHZisZZ/modpo, `src/trainer/modpo_trainer.py`,
`MODPOTrainer.modpo_loss` with `loss_type="sigmoid"`). For a pair (x, y_w, y_l) labelled on
objective k, preference w, margin rewards r_{-k} of the other objectives and
h(y) = log pi(y|x) - log pi_ref(y|x), each log-probability summed over the response tokens
(their `get_batch_logps`, `average_log_prob=False`)::

    logits = (1 / w_k) * ( beta * (h(y_w) - h(y_l)) - w_{-k} . (r_{-k}(x, y_w) - r_{-k}(x, y_l)) )
    loss   = mean over pairs of -logsigmoid(logits)

(their code writes it as chosen_rewards - rejected_rewards, each (1/w[0]) (beta h(y) - r_margin(y) @ w[1:]);
the difference is the line above.) With w_{-k} = 0 and w_k = 1 it is DPO's sigmoid loss. The
"reward accuracy" in `train.json` is MODPO's `accuracy`: the share of pairs with logits > 0.

**Margin rewards.** MODPO's margins are reward models; ours are the run's reward models' scores of
both responses (`data/scores.parquet`, computed once in the `score` step), each z-normalised with
the mean and std of the scored training data (as MORLHF's rewards), so that w weighs objectives of
equal spread, and on about the scale of a DPO implicit reward difference. The margin is a fixed
number per pair and preference (the reward models are frozen), so it is computed before training.

**Pairs** (`modpo/pairs.parquet`): `data/prepare` keeps both answers of an HH row as separate
samples, not which was chosen, so the sources are read again (`data.sources.read_rows`: an `hh` or
`pairs` row gives the chosen sample first, the rejected second). A pair is kept when its source
(the HH subset, or a `pairs` file's name) is labelled for the pair objective k (`modpo.subsets`),
both answers share a prompt, and both sample ids are in the run's scored training samples (`data/scores.parquet`,
a subset of `data/train.parquet`: held-out prompts are never used, and the length window applies
as for every method).

**w_k = 0.** MODPO divides by w_k. The authors' scripts train w on the simplex with w_k > 0:
`scripts/modpo/beavertails/modpo.py` sets the weights to (w, 1 - w) from one `--w` (its run.sh:
w = 0.5), and w_k = 1 is DPO; no script trains w_k = 0, where the pair labels would carry no weight
and the loss becomes an infinitely sharp step. We train a preference with w_k below
`modpo.min_pair_weight` (default 0.1, the 11-point grid's smallest nonzero weight) as w_k = that
floor with the other weights scaled to keep their ratios and the sum 1 (`trained_weights`): the
preference (0, 1) trains as (0.1, 0.9), the same weights as its neighbour, so the grid's end point
repeats that model rather than leaving the simplex. `train.json` records both weight vectors.

**Initial policy and reference** (`modpo.init`): `sft` (the default) is the authors' setup, whose
scripts SFT first and pass that model as `--sft_model_name`, both trained (a fresh LoRA on it) and
the reference (`scripts/modpo/summarize_w_length_penalty/run.sh`: SFT, merge, MODPO). Ours is the
run's SFT model (`methods.start`, shared with MORLHF), merged into the base weights under the
preference's fresh LoRA; `base` trains on the base policy. The reference is that model with the
LoRA disabled (as TRL and MODPO do with PEFT models): no second model in memory. The saved model
is the SFT and MODPO adapters summed exactly (`start.save_on_start`), a plain adapter on the base.

**Steps**: with `modpo.epochs` (the authors' `num_train_epochs`, 3 in
`scripts/modpo/beavertails/modpo.py`), ceil(epochs x pairs / batch_size) (`epoch_steps`); else `modpo.steps`.

Training is the SFT loop (`paretohqd.policy.sft.train_loop`) with this
loss: the same encoding and left-padded micro-batches under `train.micro_batch_tokens`, mixed
precision, `train.report_to`, and checkpoints every `train.save_every` steps, so a kill loses at
most that many steps. Its warm-up is `train.warmup_steps` cut to the steps - 1, so a short run
still reaches `modpo.lr`.

This module runs past the house's ~400 lines: a method is one self-contained module (the registry's
rule, as TRL's trainers), and a sixth of it is this text.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from paretohqd.config import Config, ConfigError, PolicyConfig, TrainConfig
from paretohqd.data.pairs import label_pairs
from paretohqd.io import read_table, write_parquet
from paretohqd.methods import start
from paretohqd.methods.contract import per_preference
from paretohqd.methods.start import save_on_start
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.batches import IGNORE, collate, encode, on_device
from paretohqd.policy.prompts import resolve_format
from paretohqd.policy.sft import Objective, save_model, train_loop
from paretohqd.progress import console
from paretohqd.rewards.normalise import Normaliser
from paretohqd.runfolder import FinalModel, RunFolder, pref_name

Encoded = tuple[list[int], int]  # (token ids, number of prompt tokens), as `batches.encode` returns


# Loss --------------------------------------------------------------------------------------------


def modpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, margin: torch.Tensor, *, beta: float, pair_weight: float) -> torch.Tensor:
    """MODPO's per-pair loss (see the module docstring); DPO's with `margin` 0 and `pair_weight` 1.

    Args:
        policy_chosen: (B,) summed log-probabilities of the chosen responses under the policy.
        policy_rejected: (B,) the same for the rejected responses.
        ref_chosen: (B,) the chosen responses under the reference model.
        ref_rejected: (B,) the rejected responses under the reference model.
        margin: (B,) w_{-k} . (r_{-k}(x, y_w) - r_{-k}(x, y_l)).
        beta: KL strength.
        pair_weight: w_k, the weight of the pair labels' objective (> 0).

    Returns:
        (B,) -logsigmoid(logits); the logits are (B,) `(beta * dh - margin) / pair_weight`.

    Examples:
        >>> t = lambda *x: torch.tensor(x)
        >>> round(modpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), t(0.0), beta=0.1, pair_weight=1.0).item(), 4)
        0.5981
    """
    return -torch.nn.functional.logsigmoid(pair_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                                       margin, beta=beta, pair_weight=pair_weight))


def pair_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected, margin, *, beta: float,
                pair_weight: float) -> torch.Tensor:
    """(B,) MODPO's logits: (beta * (h(y_w) - h(y_l)) - margin) / w_k, h = log pi - log pi_ref."""
    dh = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    return (beta * dh - margin) / pair_weight


def margins(z_chosen: np.ndarray, z_rejected: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """w_{-k} . (r_{-k}(y_w) - r_{-k}(y_l)) per pair: the reward difference of every objective but k.

    Args:
        z_chosen: (B, M) normalised rewards of the chosen responses.
        z_rejected: (B, M) the same for the rejected ones.
        weights: (M,) the preference.
        k: the pair objective's index (its column is left out).

    Examples:
        >>> margins(np.array([[9.0, 1.0, 2.0]]), np.array([[0.0, 0.5, 3.0]]), np.array([0.2, 0.4, 0.4]), 0)
        array([-0.2])
    """
    others = np.asarray(weights, dtype=np.float64).copy()
    others[k] = 0.0  # objective k speaks through the labels, not a margin
    return (np.asarray(z_chosen) - np.asarray(z_rejected)) @ others  # (B,)


def trained_weights(weights: np.ndarray, k: int, floor: float) -> np.ndarray:
    """The preference MODPO trains for `weights`: itself when w_k >= `floor` (`modpo.min_pair_weight`),
    else w_k = floor and the other weights scaled by (1 - floor) / (1 - w_k), so they keep their
    ratios and the vector stays on the simplex (MODPO divides by w_k; see the module docstring).

    Args:
        weights: (M,) the preference, on the simplex.
        k: the pair objective's index.
        floor: the smallest w_k trained, in (0, 1].

    Returns:
        (M,) float64 weights summing to 1.

    Examples:
        >>> trained_weights(np.array([0.0, 1.0]), 0, 0.1).tolist()
        [0.1, 0.9]
        >>> trained_weights(np.array([0.0, 0.25, 0.75]), 0, 0.2).tolist()
        [0.2, 0.2, 0.6000000000000001]
        >>> trained_weights(np.array([0.5, 0.5]), 0, 0.1).tolist()
        [0.5, 0.5]
    """
    w = np.asarray(weights, dtype=np.float64).copy()  # (M,)
    if w[k] >= floor:
        return w
    others = np.arange(len(w)) != k  # (M,)
    w[others] *= (1.0 - floor) / (1.0 - w[k])  # w_k < floor <= 1, so 1 - w_k > 0
    w[k] = floor
    return w


# Pairs -------------------------------------------------------------------------------------------


def objective(cfg: Config) -> str:
    """The pair objective k: `modpo.objective`, else the first objective of rewards.models that
    `modpo.subsets` labels pairs for (an objective no subset names has no labels).

    Raises:
        ConfigError: `modpo.objective` names no objective, or no objective has pair labels.
    """
    if cfg.modpo.objective is not None:
        if cfg.modpo.objective not in cfg.rewards.models:
            raise ConfigError(f"modpo.objective: {cfg.modpo.objective!r} is not an objective; choose one of "
                              f"rewards.models ({', '.join(cfg.rewards.models)})")
        return cfg.modpo.objective
    labelled = set(cfg.modpo.subsets.values())
    for name in cfg.rewards.models:
        if name in labelled:
            return name
    raise ConfigError(f"modpo: no objective of rewards.models ({', '.join(cfg.rewards.models)}) has pair labels in "
                      f"modpo.subsets ({cfg.modpo.subsets}); map a data source to one, e.g. "
                      "modpo.subsets={helpful-base: helpful}")


def build_pairs(cfg: Config, train: pd.DataFrame) -> pd.DataFrame:
    """The training pairs labelled for the pair objective (see the module docstring).

    Args:
        cfg: the run's config (`data.sources`, `modpo.subsets`).
        train: the run's scored training samples (`data/scores.parquet`, column `id`): held-out prompts
            are not in it, nor samples a column objective left unscored.

    Returns:
        One row per pair: chosen_id, rejected_id, source, in the sources' order, without duplicates.

    Raises:
        ConfigError: no pair is left.
    """
    k = objective(cfg)
    subsets = {s for s, o in cfg.modpo.subsets.items() if o == k}
    pairs = label_pairs(cfg.data, set(train["id"]))
    pairs = pairs[pairs["source"].isin(subsets)].reset_index(drop=True)
    if pairs.empty:
        raise ConfigError(f"modpo: no training pair is labelled for {k!r}: modpo.subsets maps "
                          f"{sorted(subsets) or 'no source'} to it; the sources' names are the HH subsets "
                          "(e.g. helpful-base) or a pairs file's name")
    return pairs.reset_index(drop=True)


# Training ----------------------------------------------------------------------------------------


def sequence_logps(model, batch: dict) -> torch.Tensor:
    """(B,) summed log-probability of each sequence's response tokens (`batches.collate`'s labels)."""
    keep = int(batch["keep"])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=keep).logits  # (B, keep, V)
    targets = batch["labels"][:, -keep + 1:]  # (B, keep-1); every response has its EOS, so keep >= 2
    # cross_entropy is -log p of each target (0 where ignored), without a (B, keep, V) log-softmax copy
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                            ignore_index=IGNORE, reduction="none")  # (B * (keep-1),)
    return -nll.view(len(targets), -1).sum(-1)


def train_pairs(
    pairs: list[tuple[Encoded, Encoded]],
    margin: np.ndarray,
    out: Path,
    *,
    policy: PolicyConfig,
    cfg: TrainConfig,
    steps: int,
    batch_size: int,
    lr: float,
    beta: float,
    pair_weight: float,
    seed: int,
    pad_id: int,
    init: Path | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    record: dict | None = None,
    **log,
) -> dict:
    """Train one LoRA model with MODPO's loss on encoded (chosen, rejected) pairs in the SFT loop
    (`sft.train_loop`) and save it to `out` (atomically, with `train.json`); resumes from
    `out/../<name>.ckpt` if a killed run left one. The policy starts from, and the reference is, the
    base or (`init`) the SFT adapter merged into it; with `init` the saved adapter is both summed.

    Args:
        pairs: (chosen, rejected) encodings, each `batches.encode`'s (token ids, prompt length).
        margin: (n_pairs,) each pair's margin w_{-k} . (r_{-k}(y_w) - r_{-k}(y_l)).
        cfg: the `train` section: LoRA, micro-batch budget, precision, warm-up, checkpoints.
        batch_size: pairs per optimizer step, summed over devices.
        pair_weight: w_k (> 0).
        init: the SFT model's adapter (`start.sft_model`), or None for the base policy.
        on_step: called with (step, loss, reward accuracy) after each step.
        record: more entries for `train.json` (the preference, the weights used).
        log: `sft.train_loop`'s log_dir, log_run, log_tag.
    """
    margin_t = torch.as_tensor(margin, dtype=torch.float32)  # (n_pairs,)

    def loss(model, acc, idx: list[int]) -> tuple[torch.Tensor, list[float]]:
        # chosen then rejected, in one forward pass
        batch = on_device(collate([pairs[i][0] for i in idx] + [pairs[i][1] for i in idx], pad_id), acc.device)
        # the reference: the adapter off, i.e. the SFT model (`init`) or the base, no gradients. Here, not
        # precomputed once per run: it costs a third of the pair's forward + backward and needs no file to
        # write, resume and check (a table would save only the reference passes of epochs after the first)
        policy_model = acc.unwrap_model(model)
        with torch.no_grad(), policy_model.disable_adapter():
            ref = sequence_logps(policy_model, batch)  # (2b,)
        logps = sequence_logps(model, batch)  # (2b,)
        logits = pair_logits(*logps.chunk(2), *ref.chunk(2), margin_t[idx].to(acc.device),
                             beta=beta, pair_weight=pair_weight)  # (b,)
        return (-torch.nn.functional.logsigmoid(logits).sum(),
                [float(batch["attention_mask"].sum()), float((logits > 0).sum())])

    def summary(history: list[dict[str, float]]) -> dict:
        accuracies = [m["accuracy"] for m in history]
        return {"accuracy_first": accuracies[0] if accuracies else None,
                "accuracy_last": accuracies[-1] if accuracies else None, "accuracies": accuracies}

    # a pair costs about its longer answer's sequence twice: micro-batches hold half the token budget in pairs
    objective = Objective([max(len(c[0]), len(r[0])) for c, r in pairs], max(cfg.micro_batch_tokens // 2, 1),
                          size=len, loss=loss, counts=("tokens", "right"),
                          metrics=lambda counts, n_pairs: {"accuracy": counts["right"] / n_pairs}, summary=summary)
    # a run shorter than the warm-up still reaches its peak rate, at its last step
    cfg = cfg.model_copy(update={"lr": lr, "batch_size": batch_size, "warmup_steps": min(cfg.warmup_steps, steps - 1)})

    def save(model, out: Path, stats: dict) -> None:
        if init is None:
            save_model(model, out, stats)
        else:  # the delta alone first (`save_model`, so a test's kill replaces both), then SFT + delta
            save_on_start(policy, init, out, stats, lambda delta: save_model(model, delta, stats))

    return train_loop(objective, out, policy=policy, cfg=cfg, steps=steps, seed=seed, save=save, start=init,
                      on_step=on_step, record={**(record or {}), "pairs": len(pairs), "init": str(init or "base")},
                      lr_key="modpo.lr", **log)


# Method ------------------------------------------------------------------------------------------


def preferences(cfg: Config) -> np.ndarray:
    """(P, M) preferences MODPO trains (`modpo.preferences`, default select.preferences)."""
    chosen = cfg.modpo.preferences if cfg.modpo.preferences is not None else cfg.select.preferences
    return preferences_from_config(chosen, len(cfg.rewards.models))


def epoch_steps(epochs: float, n_pairs: int, batch_size: int) -> int:
    """Optimizer steps of `epochs` passes over `n_pairs` pairs, `batch_size` a step: ceil(epochs x n_pairs /
    batch_size), at least 1 (an epoch's last partial batch continues into the next: `batches.step_plan`
    draws epochs of a seeded shuffle).

    Examples:
        >>> epoch_steps(3, 100, 8), epoch_steps(1, 16, 8), epoch_steps(0.5, 10, 4), epoch_steps(1, 0, 8)
        (38, 2, 2, 1)
    """
    return max(1, math.ceil(epochs * n_pairs / batch_size))


def _budget(cfg: Config, n_pairs: int) -> tuple[int, int]:
    """(steps, pairs per step) of each preference, given the run's `n_pairs` training pairs."""
    batch_size = cfg.modpo.batch_size or cfg.train.batch_size
    if cfg.modpo.epochs is not None:
        return epoch_steps(cfg.modpo.epochs, n_pairs, batch_size), batch_size
    return cfg.modpo.steps or cfg.train.steps, batch_size


def train(r: RunFolder, tokenizer) -> None:
    """Build the pairs and the SFT start once, then train one model per preference."""
    pairs_path = r.path("modpo", "pairs.parquet")
    r.step("modpo/pairs", pairs_path, lambda: _write_pairs(r, pairs_path))
    # before the preferences: every one starts from it
    init = start.sft_model(r, tokenizer, key="modpo.init") if r.cfg.modpo.init == "sft" else None
    with r.fan_out("train"):  # the preferences are independent (one task each under `executor: ray`)
        for i, w in enumerate(preferences(r.cfg)):
            out = r.path("modpo", pref_name(i))
            r.step(f"modpo/{pref_name(i)} w={w.round(3).tolist()}", out / "train.json",
                   lambda w=w, out=out, i=i: train_preference(r, tokenizer, w, out, seed=r.cfg.seed + i, init=init),
                   every_process=True)


def _write_pairs(r: RunFolder, path: Path) -> None:
    pairs = build_pairs(r.cfg, read_table(r.scores))
    counts = pairs["source"].value_counts().to_dict()
    console.print(f"  {len(pairs):,} training pairs labelled for {objective(r.cfg)!r} ({counts})")
    write_parquet(pairs, path)


def train_preference(r: RunFolder, tokenizer, weights: np.ndarray, out: Path, *, seed: int,
                     init: Path | None = None) -> dict:
    """One preference's model: its margins from the run's scores, then `train_pairs` (from `init`)."""
    cfg = r.cfg
    k = r.objectives.index(objective(cfg))
    pairs = read_table(r.path("modpo", "pairs.parquet"))
    steps, batch_size = _budget(cfg, len(pairs))
    # the budget reaches steps x batch pairs: draw them here (seeded) and encode only those
    pairs = pairs.sample(n=min(len(pairs), steps * batch_size), random_state=seed).reset_index(drop=True)
    samples = read_table(r.train_data).set_index("id")
    scores = read_table(r.scores).set_index("id")
    z = Normaliser.of_scores(r.scores, r.objectives)
    z_chosen = z(scores.loc[pairs["chosen_id"], r.objectives].to_numpy(np.float64))  # (n, M)
    z_rejected = z(scores.loc[pairs["rejected_id"], r.objectives].to_numpy(np.float64))  # (n, M)
    trained = trained_weights(weights, k, cfg.modpo.min_pair_weight)  # (M,) on the simplex
    w_k = float(trained[k])
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)

    def enc(ids: pd.Series) -> list[Encoded]:
        rows = samples.loc[ids]
        return [encode(tokenizer, list(m), resp, cfg.train.max_length, fmt)
                for m, resp in zip(rows["messages"], rows["response"])]

    encoded = list(zip(enc(pairs["chosen_id"]), enc(pairs["rejected_id"])))
    t0 = time.perf_counter()

    def show(step: int, loss: float, accuracy: float) -> None:
        if step == 1 or step % 10 == 0 or step == steps:
            console.print(f"  step {step}/{steps}  loss {loss:.3f}  accuracy {accuracy:.2f}  "
                          f"{(time.perf_counter() - t0) / step:.1f} s/step")

    console.print(f"  {len(pairs):,} pairs on {objective(cfg)!r}, w_k = {w_k:g}, margins from "
                  f"{[n for j, n in enumerate(r.objectives) if j != k and trained[j] > 0]}")
    stats = train_pairs(encoded, margins(z_chosen, z_rejected, trained, k), out, policy=cfg.policy, cfg=cfg.train,
                        steps=steps, batch_size=batch_size, lr=cfg.modpo.lr, beta=cfg.modpo.beta, pair_weight=w_k,
                        seed=seed, pad_id=tokenizer.pad_token_id, init=init, on_step=show,
                        record={"weights": weights.tolist(), "trained_weights": trained.tolist(),
                                "objective": objective(cfg), "pair_weight": w_k},
                        **r.log_to(str(out.relative_to(r.root))))
    return stats


def check(cfg: Config) -> list[str]:
    """Problems `preflight.preflight` reports before anything runs: a pair objective to train on (the one
    place `modpo.objective` is checked against rewards.models)."""
    try:
        objective(cfg)
    except ConfigError as e:
        return [str(e)]
    return []


def final_models(r: RunFolder) -> list[FinalModel]:
    return per_preference(r, "modpo", preferences(r.cfg))


def describe(cfg: Config) -> str:
    m = cfg.modpo
    batch_size = m.batch_size or cfg.train.batch_size
    length = f"{m.epochs:g} epochs" if m.epochs is not None else f"{_budget(cfg, 0)[0]} steps"
    begin = f"from SFT ({start.steps(cfg)} steps)" if m.init == "sft" else "from the base"
    return (f"MODPO (DPO on {objective(cfg)} pairs with the other rewards as margin, {begin}, beta {m.beta}, "
            f"{length} x {batch_size} pairs, {len(preferences(cfg))} preferences)")


def work(cfg: Config, n_samples: int | None = None) -> dict[str, float]:
    """Pairs x steps of every preference, and the SFT start's samples; with `modpo.epochs` the pairs are
    counted as `n_samples` / 2 (each pair is two scored samples): an upper bound, since pairs from a source
    not labelled for the pair objective are left out (NaN without `n_samples`)."""
    n = len(preferences(cfg))
    if cfg.modpo.epochs is not None and n_samples is None:
        pairs = float("nan")
    else:
        steps, batch_size = _budget(cfg, (n_samples or 0) // 2)
        pairs = n * steps * batch_size
    sft = start.samples(cfg) if cfg.modpo.init == "sft" else 0
    return {"dpo_pairs": pairs, "train_samples": sft, "sft_start_samples": sft, "models": n}
