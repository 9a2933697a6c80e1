"""Rewards z-normalised by each objective's mean and std over the run's scored training data, so
that a preference weighs objectives of equal spread rather than whatever scale each reward model
happens to have: MORLHF's rewards, MODPO's margins and RiC's reward tags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.rewards.score import stats_path


@dataclass(frozen=True)
class Normaliser:
    """z = (reward - mean) / std per objective."""

    mean: np.ndarray
    """(M,) each objective's mean."""
    std: np.ndarray
    """(M,) each objective's standard deviation (population), never 0."""

    @classmethod
    def fit(cls, values: ArrayLike) -> Normaliser:
        """From (N, M) rewards. A constant reward (std 0) gets std 1: it carries no information and
        stays at 0.

        Examples:
            >>> n = Normaliser.fit([[1.0, 5.0], [3.0, 5.0]])
            >>> n.mean.tolist(), n.std.tolist(), n([[3.0, 5.0]]).tolist()
            ([2.0, 5.0], [1.0, 1.0], [[1.0, 0.0]])
        """
        values = np.asarray(values, dtype=np.float64)  # (N, M)
        mean, std = values.mean(axis=0), values.std(axis=0)  # (M,)
        return cls(mean, np.where(std > 0, std, 1.0))

    @classmethod
    def of_scores(cls, scores: str | Path, names: list[str]) -> Normaliser:
        """From the statistics `write_scores` recorded beside the scored table `scores` (its mean and
        std per objective, for the objectives `names` in that order)."""
        stats = json.loads(stats_path(scores).read_text())["stats"]
        return cls(np.array([stats[n]["mean"] for n in names]), np.array([stats[n]["std"] or 1.0 for n in names]))

    def __call__(self, values: ArrayLike) -> np.ndarray:
        """(N, M) z-scores of (N, M) rewards."""
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std
