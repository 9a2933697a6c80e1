"""Hugging Face sequence classifiers as reward models (the paper's Ray2333 / humor models, or any)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from paretohqd.data.transcript import ASSISTANT

if TYPE_CHECKING:
    from paretohqd.config import RewardsConfig
    from paretohqd.rewards.base import Format


class HFRewardModel:
    """An `AutoModelForSequenceClassification`; the score is one logit.

    `pair` input feeds (prompt + "\\n\\nAssistant:", response) as a text pair, as the Ray2333 model
    cards do; `response` input feeds the response alone.
    """

    def __init__(self, source: str, cfg: RewardsConfig, *, format: Format, logit: int, name: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from paretohqd.config import ConfigError
        from paretohqd.rewards.base import available, check_architectures, resolve_dtype, state_fingerprint

        self.name, self.format, self.logit, self.device = name, format, logit, cfg.device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype=resolve_dtype(cfg.dtype, cfg.device), trust_remote_code=cfg.trust_remote_code
            )
        except Exception as e:  # noqa: BLE001 - sorted below
            from paretohqd.io import unreadable

            if not unreadable(e):
                raise
            raise ConfigError(
                f"cannot load reward model {name!r} from {source!r} (offline, not in the HF cache, or damaged?): "
                f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}. Available: {available(cfg)}"
            ) from None
        check_architectures(self.model.config.architectures or [], name)  # hub ids: `locate` did not read them
        self.model.eval().to(cfg.device)
        n_logits = self.model.config.num_labels
        if not 0 <= logit < n_logits:
            raise ConfigError(f"reward model {name!r} has {n_logits} logit(s); logit index {logit} is out of range (rewards.logit)")
        # decoder classifiers (GPT-2) read the last non-pad token, so they need a pad id
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        # `left` (the default) cuts long inputs at the start: the end of the dialogue and the response matter most
        self.tokenizer.truncation_side = cfg.truncation_side
        self.max_length = min(cfg.max_length, getattr(self.tokenizer, "model_max_length", cfg.max_length))
        # `left` was the only side before `rewards.truncation_side` existed: leaving it out keeps those caches valid
        side = () if cfg.truncation_side == "left" else (cfg.truncation_side,)
        self.fingerprint = state_fingerprint(self.model, "hf", format, logit, self.max_length, str(self.model.dtype), *side)

    def inputs(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str] | None]:
        """The texts the tokenizer sees: (first, second) of a pair, or (responses, None)."""
        if self.format == "response":
            return list(responses), None
        return [p + ASSISTANT for p in prompts], list(responses)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> dict:
        first, second = self.inputs(prompts, responses)
        return self.tokenizer(first, second, truncation=True, max_length=self.max_length)

    def forward(self, batch: dict) -> np.ndarray:
        """Logit `self.logit` for one padded batch of token ids."""
        import torch

        padded = self.tokenizer.pad(batch, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**padded).logits  # (batch, num_labels)
        return logits[:, self.logit].float().cpu().numpy()

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Scores in input order; batches are formed in token-length order so padding stays small."""
        enc = self.encode(prompts, responses)
        ids = enc["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty(len(ids), dtype=np.float64)  # (n,)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.forward({k: [enc[k][i] for i in idx] for k in enc.keys()})
        return out
