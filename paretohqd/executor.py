"""Where a run's independent units run (the `executor` config): here, one after another (`local`),
or together as Ray tasks over a cluster (`ray`; README, "Scale out").

`attach(r)` gives the run folder a runner for the length of the run: its `fan_out` blocks
(training per preference, stage-2 generation per model, the baselines' models) and `run_all` jobs
(evaluation per model) become Ray tasks with the resources of `executor.train` /
`executor.generate`. A task whose worker or node dies is started again (`executor.max_retries`)
and resumes from the checkpoint or saved batch the dead one left in the run folder.

This process (the driver) holds the run folder's lock, prepares, scores and selects, and is the
only writer of the manifest: a task returns where it ran and for how long, and the driver records
it. The run folder must lie at the same path on every node (shared storage), which one task per
node checks before any work starts. Tasks run the driver's paretohqd code (shipped to the nodes by
Ray) with the driver's PARETOHQD_*, HF_* and TRANSFORMERS_* variables (caches, offline mode); each
node needs paretohqd's dependencies installed (`pip install paretohqd[ray]`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from paretohqd.config import ConfigError, ExecutorConfig
from paretohqd.devices import device_name
from paretohqd.io import InputError, write_text
from paretohqd.progress import console
from paretohqd.runfolder import RunFolder, Runner

_FORWARDED = ("PARETOHQD_", "HF_", "TRANSFORMERS_")
"""Prefixes of the driver's environment variables that every task gets."""


@contextmanager
def attach(r: RunFolder) -> Iterator[None]:
    """Run `r`'s independent units where `r.cfg.executor` says, for the block.

    With `ray`: joins the cluster (or starts a local Ray, stopped when the block ends), checks that
    every node sees the run folder, and sets `r.runner`.

    Raises:
        ConfigError: `executor.kind` is ray but Ray is not installed.
        InputError: a node cannot see the run folder.
    """
    cfg = r.cfg.executor
    if cfg.kind == "local":
        yield
        return
    ray = _import_ray()
    connect = not ray.is_initialized()  # (a session the caller opened is the caller's, with its runtime_env)
    if connect:
        # `auto` is ray.init's own search ($RAY_ADDRESS, then the cluster `ray start` made on this
        # machine) falling back to a local Ray; ray.init(address="auto") would fail without a cluster
        ray.init(address=None if cfg.address == "auto" else cfg.address, runtime_env=runtime_env(),
                 include_dashboard=False, logging_level="warning")
    try:
        nodes = check_shared_storage(r.root)
        resources = ray.cluster_resources()
        console.print(f"executor: ray, {len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs, "
                      f"{resources.get('GPU', 0):g} GPUs; every node sees {r.root}")
        r.runner = _runner(cfg, has_gpus=resources.get("GPU", 0) > 0)
        yield
    finally:
        r.runner = None
        if connect:  # disconnects; a local Ray that ray.init started stops with it
            ray.shutdown()


def executor_problems(cfg: ExecutorConfig, n_processes: int) -> list[str]:
    """What stops `cfg` before a run starts (`preflight.preflight`), one line each.

    Examples:
        >>> executor_problems(ExecutorConfig(kind="ray"), 2)[0].split(";")[0]
        'executor.kind: ray runs each unit as a task of its own'
        >>> executor_problems(ExecutorConfig(), 2)
        []
    """
    if cfg.kind == "local":
        return []
    problems = []
    if n_processes > 1:
        problems.append(f"executor.kind: ray runs each unit as a task of its own; launch without torchrun / "
                        f"accelerate launch (here {n_processes} processes), or set executor.kind=local")
    try:
        _import_ray()
    except ConfigError as e:
        problems.append(str(e))
    return problems


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor.kind: ray needs Ray, which is not installed here; "
                          "`pip install paretohqd[ray]` or set executor.kind=local") from None
    return ray


def runtime_env() -> dict:
    """The Ray job's runtime_env: this paretohqd's code on every node (uploaded once per version, so
    all tasks run what the driver runs) and the driver's PARETOHQD_*, HF_*, TRANSFORMERS_* variables."""
    return {"py_modules": [str(Path(__file__).resolve().parent)],
            "env_vars": {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}}


def _runner(cfg: ExecutorConfig, *, has_gpus: bool) -> Runner:
    import ray

    task = ray.remote(_run_job)

    def run(kind: str, jobs: list[Callable[[], object]]) -> list:
        res = getattr(cfg, kind)
        gpus = res.num_gpus if res.num_gpus is not None else float(has_gpus)
        # max_retries covers a dead worker or node; an exception the job raises is not retried
        start = task.options(num_cpus=res.num_cpus, num_gpus=gpus, resources=res.resources,
                             max_retries=cfg.max_retries, name=f"paretohqd-{kind}")
        refs = [start.remote(job, threads=max(1, int(res.num_cpus)), n_devices=gpus or 1) for job in jobs]
        console.print(f"  {len(refs)} {kind} task(s) started on the cluster")
        return [_result(ref) for ref in refs]

    return run


def _result(ref) -> dict | BaseException:
    """A task's record, or the error it ended with: the job's own exception (a user error stays one
    line; Ray's report with the remote traceback is its cause), or Ray's (retries exhausted)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, BaseException) else e
        if cause is not e:
            cause.__cause__ = e
        return cause
    except ray.exceptions.RayError as e:
        return e


def _run_job(job: Callable[[], object], *, threads: int, n_devices: float) -> dict:
    """The body of every task: run `job` with torch on `threads` threads; return the task's record."""
    import ray
    import torch
    from accelerate.utils.memory import clear_device_cache

    torch.set_num_threads(threads)  # the cores the task reserved, not the node's
    t0 = time.perf_counter()
    job()
    wall = time.perf_counter() - t0
    clear_device_cache(garbage_collection=True)  # a worker may run the next task (CPU tasks reuse it)
    return {"wall_s": wall, "device": device_name(), "n_devices": n_devices, "executor": "ray",
            "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}


# Shared storage ----------------------------------------------------------------------------------


def check_shared_storage(root: Path) -> list[str]:
    """Check that every alive node of the cluster reads and writes the run folder at `root`: the
    driver writes a probe file there, one task per node reads it and writes its own beside it,
    and the driver reads those back. The probes are hidden files, removed afterwards.

    Returns:
        The ids of the nodes checked.

    Raises:
        InputError: a node cannot see the folder (named by address and id, with the path).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = Path(root).resolve() / f".probe-{token}"
    write_text(token, probe)
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    task = ray.remote(_probe)
    try:
        # num_cpus=0: a node whose cores are all taken still answers
        refs = {node: task.options(num_cpus=0, max_retries=0,
                                   scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(str(probe), token, node) for node in nodes}
        for node, ref in refs.items():
            why = ray.get(ref)
            mine = probe.with_name(f"{probe.name}-{node}")
            if why is None and not (mine.is_file() and mine.read_text() == token):
                why = f"its file {mine} does not reach the driver"
            if why is not None:
                raise InputError(f"executor: node {nodes[node]} ({node[:12]}) cannot share the run folder {probe.parent}: "
                                 f"{why}; every node needs it at the same path (shared storage such as NFS), "
                                 "or set executor.kind=local")
    finally:
        for path in probe.parent.glob(f"{probe.name}*"):
            path.unlink(missing_ok=True)
    return list(nodes)


def _probe(path: str, token: str, node: str) -> str | None:
    probe = Path(path)
    try:
        if not probe.is_file() or probe.read_text() != token:
            return f"it does not see {probe}"
        write_text(token, probe.with_name(f"{probe.name}-{node}"))
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None
