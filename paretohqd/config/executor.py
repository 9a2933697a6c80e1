"""`executor`: where a run's independent tasks run (`paretohqd.executor`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from paretohqd.config.section import Section


class TaskResources(Section):
    """What one Ray task reserves on its node (`executor.kind: ray`)."""

    num_cpus: float = Field(1, ge=0)
    """CPU cores the task reserves; its torch computes with that many threads (at least 1)."""
    num_gpus: float | None = Field(None, ge=0)
    """GPUs the task reserves; a fraction shares one GPU (0.5: two tasks per GPU), above 1 a whole number.
    Default: 1 where the cluster has GPUs, else 0."""
    resources: dict[str, float] = {}
    """Custom Ray resources the task needs, to steer it to chosen nodes (`ray start --resources='{"big": 1}'`)."""

    @field_validator("num_gpus")
    @classmethod
    def _whole(cls, v: float | None) -> float | None:
        if v is not None and v > 1 and v != int(v):
            raise ValueError(f"a task takes a fraction of one GPU or whole GPUs (got {v}); use e.g. 0.5, 1 or 2")
        return v


class ExecutorConfig(Section):
    kind: Literal["local", "ray"] = "local"
    """Where a run's independent units run: `local`, one after another in this process; `ray`, together as Ray
    tasks over a cluster (README, "Scale out"): training per preference (both stages, and the baselines' models),
    generation per model (stage 2, evaluation). Scoring, selection and the manifest stay in this process."""
    address: str = "auto"
    """The Ray cluster to join: `auto` = $RAY_ADDRESS, else the one `ray start` made on this machine, else a local
    Ray started for the run (and stopped after it); or HOST:PORT of the head node."""
    max_retries: int = Field(3, ge=0)
    """Times a task whose worker or node dies is started again; it resumes from its last checkpoint
    (train.save_every) or saved generation batch."""
    train: TaskResources = TaskResources()
    """Resources of each training task."""
    generate: TaskResources = TaskResources()
    """Resources of each generation task."""
