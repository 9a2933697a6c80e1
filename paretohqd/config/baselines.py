"""The baselines' sections (`ric`, `soups`, `morlhf`, `modpo`), one class per method, each naming its
method module, and `sft_start`, the SFT model that MORLHF, Rewarded Soups' RL and MODPO share. They
live here, not beside their methods, because every layer below `methods` reads `Config` and may not
import a method (pyproject's layers contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from paretohqd.config.section import Section


class RicConfig(Section):
    """Rewards-in-Context (`paretohqd.methods.ric`)."""

    steps: int | None = Field(None, ge=1)
    """Optimizer steps of RiC's offline training (batch train.batch_size); default train.steps x the number of
    preferences (ParetoHqD's stage-1 budget). RiC's README: 20,000 steps on 4 processes x batch 2, i.e. 160k
    samples, about one pass over HH-RLHF's 160,800 training rows (the paper configs: 20,000 of batch 8)."""
    mapping: Literal["linf", "l2", "linear"] = "linf"
    """Preference -> desired rewards at inference (RiC's `ric/utils.py: map_rewards_from_preference`): `linf`
    (its default there: the top-weighted objective asks for the maximum, objective i for min(M w_i, 1) of the
    way from min to max), `l2` (objective i asks for w_i / |w|_2 of the way: what RiC's `ric/evaluation.py`
    calls for the LLM fronts, so the paper configs use it) or `linear` (w_i of the way)."""
    online_rounds: int = Field(0, ge=0)
    """RiC's online iterations after the offline training (its main.py `num_online_iterations`, 1 there): each generates answers to desired-reward tags, scores them, keeps the top quantile and trains on it with a sample of the offline data."""
    online_prompts: int = Field(20_000, ge=1)
    """Prompts answered per online round, drawn with replacement from the training prompts (RiC's `num_generation_samples`)."""
    online_quantile: float = Field(0.7, ge=0, le=1)
    """A sample is kept for online training if any objective's reward is at or above this quantile of its set (RiC's `quantile_threshold`): applied to the generated answers and to the offline data."""
    online_origin: int = Field(10_000, ge=0)
    """Offline samples (after the same quantile filter) mixed into each online round's training data (RiC's `num_origin_samples`)."""
    online_steps: int = Field(500, ge=1)
    """Optimizer steps per online round (batch train.batch_size). RiC's main.py runs 4,000 (`online_training_steps`),
    in its README on 4 processes x batch 2: 4,000 steps of batch 8 (the paper configs); 500 of 8 is main.py's
    batch 1 alone."""
    online_lr: float = Field(1e-5, gt=0)
    """Learning rate of the online rounds (RiC's `learning_rate`; its offline training uses a larger one)."""
    online_temperature: float = Field(0.7, gt=0)
    """Sampling temperature of the online rounds' answers (RiC's generation.py; top_p and top_k are generate's)."""


class SoupsConfig(Section):
    """Rewarded Soups (`paretohqd.methods.soups`)."""

    train: Literal["sft", "grpo"] = "sft"
    """Each objective's model: SFT on that objective's top select.k samples for train.steps steps, or GRPO on that objective's reward alone (the `morlhf` settings, as Rewarded Soups' RL)."""


class MorlhfConfig(Section):
    """MORLHF, linear scalarisation with RL (`paretohqd.methods.morlhf`; Rewarded Soups' RL variant too)."""

    preferences: int | str | list[list[float]] = 5
    """Preferences trained with RL: grid points per axis, or explicit weight vectors (paper: 5)."""
    steps: int = Field(100, ge=1)
    """GRPO optimizer steps per preference."""
    batch_size: int = Field(8, ge=1)
    """Completions per step (prompts per step = batch_size / num_generations)."""
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt; their rewards are normalised within the group."""
    max_completion_length: int | None = Field(None, ge=1)
    """Longest sampled completion, in tokens; default generate.max_new_tokens."""
    temperature: float | None = Field(None, gt=0)
    """Sampling temperature of the RL completions; default generate.temperature (1.0 if that is 0, greedy:
    GRPO needs distinct completions). RiC's PPO samples at 0.7 (`ppo/morlhf.py`, `generation_kwargs`)."""
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate of the LoRA adapters."""
    beta: float = Field(0.04, ge=0)
    """KL coefficient to the starting policy (RLHF's leash; 0 drops the reference forward pass)."""
    init: Literal["base", "sft"] = "sft"
    """Where RL starts (and what the KL term holds it to): `sft`, as RiC's MORLHF, the run's SFT model (`sft_start`), shared by every preference, Rewarded Soups' RL objectives and MODPO; or `base`, the policy model itself."""
    aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    """How GRPO turns the objectives' rewards into one advantage (TRL's `multi_objective_aggregation`): `sum_then_normalize` normalises w . r within each prompt's group; `normalize_then_sum` (GDPO, trl#4785) normalises each reward within the group first, so distinct reward combinations with equal sums keep distinct advantages. The `morlhf-gdpo` method sets the latter."""

    @model_validator(mode="after")
    def _groups(self) -> MorlhfConfig:
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations}): each prompt's completions form one group")
        return self


class SftStartConfig(Section):
    """The run's SFT model (`paretohqd.methods.start`): a LoRA fine-tuned on the training data's chosen answers
    (HH labels), trained once per run (and once per `paretohqd compare`, whose runs share it), from which MORLHF
    (`morlhf.init: sft`), Rewarded Soups' RL objectives and MODPO (`modpo.init: sft`) start."""

    steps: int | None = Field(None, ge=1)
    """Optimizer steps (batch train.batch_size); default train.steps."""


class ModpoConfig(Section):
    """MODPO (`paretohqd.methods.modpo`); `modpo.check` reports an objective it cannot train on."""

    preferences: int | str | list[list[float]] | None = None
    """Preferences MODPO trains, one model each: grid points per axis, a preset or explicit weight vectors;
    default select.preferences (the same models ParetoHqD evaluates)."""
    objective: str | None = None
    """The objective whose pair labels the loss is fit on (MODPO's w_k); the others enter as margins from
    their reward models. Default: the first objective of rewards.models that `subsets` finds labelled pairs for."""
    subsets: dict[str, str] = {"harmless-base": "harmless", "helpful-base": "helpful", "helpful-online": "helpful",
                               "helpful-rejection-sampled": "helpful"}
    """Which objective a pair's chosen / rejected label is about, by its source: the HH subset, or a `pairs`
    file's name (other formats carry no pair labels). A source not named here gives no pairs."""
    init: Literal["base", "sft"] = "sft"
    """The initial policy and the reference of the implicit reward beta x log(pi / pi_ref): `sft`, as the authors
    (their scripts start MODPO from an SFT model, `--sft_model_name`, and use it as the reference), the run's SFT
    model (`sft_start`, shared with MORLHF); or `base`, the policy model itself."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps per preference; default train.steps (ParetoHqD's stage-1 budget per preference), unless
    `epochs` is set."""
    epochs: float | None = Field(None, gt=0)
    """Passes over the training pairs per preference: steps = ceil(epochs x pairs / batch_size), replacing `steps`
    (the authors' scripts give epochs: 3 in scripts/modpo/beavertails/modpo.py). Default: `steps`."""
    batch_size: int | None = Field(None, ge=1)
    """Pairs per optimizer step, summed over devices (each pair is two responses); default train.batch_size."""
    lr: float = Field(1e-4, gt=0)
    """Peak AdamW learning rate of the LoRA adapters (MODPO's scripts: 1e-4 with LoRA r16 / alpha 32, as ours)."""
    beta: float = Field(0.1, gt=0)
    """KL strength: the implicit reward is beta x log(pi / pi_ref) (MODPO's and DPO's default 0.1)."""
    min_pair_weight: float = Field(0.1, gt=0, le=1)
    """Floor on w_k, which MODPO's loss divides by: a preference with w_k below it trains with w_k = this and
    its other weights scaled to keep their ratios and sum 1 (the authors train w on the simplex with w_k > 0);
    0.1 is the 11-point grid's smallest nonzero weight. See `paretohqd.methods.modpo`."""

    @model_validator(mode="after")
    def _one_length(self) -> ModpoConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"steps ({self.steps}) and epochs ({self.epochs}) both set the training length; "
                             "set the other to null (e.g. --set modpo.epochs=null)")
        return self


# Run-wide sections -------------------------------------------------------------------------------
