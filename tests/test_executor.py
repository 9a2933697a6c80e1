"""`executor: ray` (issue 14): a tiny real run (`conftest.tiny_run_overrides`, 4 preferences) whose
independent units are Ray tasks on two nodes simulated on this machine (`ray.cluster_utils.Cluster`,
1 CPU each, so that concurrent tasks must spread) ends as the same run in one process does: the
same selections, stage-2 pools and evaluation answers, adapters equal within float noise (every
torch computes with 1 thread, the local run too). A task whose worker is SIGKILLed right after its
first checkpoint is retried, resumes from it, and the run ends as the uninterrupted one."""

import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_overrides
from paretohqd import executor, pipeline
from paretohqd.config import load_config

ray = pytest.importorskip("ray")
OBJECT_STORE = 100 * 2**20  # bytes per node (Ray's floor is 75 MiB)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("executor")


def _sets(assets: dict, work: Path, name: str, *more: str) -> list[str]:
    # one score cache for all runs (rewards.dir): the same texts are scored once
    return tiny_run_overrides(assets, work / "runs", work / "rewards", name) + ["select.preferences=4", *more]


@pytest.fixture(scope="module")
def local_run(work, chaos_assets) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each task (executor.train.num_cpus 1): the same sums in the same order
    try:
        return pipeline.run(load_config("configs/demo.yaml", _sets(chaos_assets, work, "local")))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster()
    try:
        for _ in range(2):
            nodes.add_node(num_cpus=1, object_store_memory=OBJECT_STORE, include_dashboard=False)
        nodes.wait_for_nodes()
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def ray_run(work, chaos_assets, cluster) -> Path:
    sets = _sets(chaos_assets, work, "ray", "executor.kind=ray", f"executor.address={cluster.address}")
    return pipeline.run(load_config("configs/demo.yaml", sets))


def _same_outputs(a: Path, b: Path, tables: list[str]) -> None:
    for rel in tables:
        # (a stage-2 table's `model` column names the adapter by its path, which names the run folder)
        pd.testing.assert_frame_equal(pd.read_parquet(a / rel).drop(columns="model", errors="ignore"),
                                      pd.read_parquet(b / rel).drop(columns="model", errors="ignore"), obj=rel)
    adapters = sorted(b.glob("stage*/pref-*/adapter_model.safetensors"))
    assert len(adapters) >= 4
    for path in adapters:
        wa, wb = load_file(a / path.relative_to(b)), load_file(path)
        assert all(torch.allclose(wa[k], wb[k]) for k in wa), path


def _steps(root: Path, prefix: str) -> dict[str, dict]:
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    return {name: e for name, e in steps.items() if name.startswith(prefix)}


def test_a_ray_run_equals_the_local_run(local_run, ray_run):
    _same_outputs(local_run, ray_run, ["stage1/selection.parquet", "stage2/selection.parquet", "stage2/scores.parquet",
                                       "evaluate/responses.parquet"])
    # the same files recorded for every step, each training and generation step by the task that ran it
    local, remote = _steps(local_run, ""), _steps(ray_run, "")
    assert list(local) == list(remote)
    assert all(set(local[s]["outputs"]) == set(remote[s]["outputs"]) for s in local)
    tasks = [e for s, e in remote.items() if s.startswith(("stage1/pref", "stage2/pref", "stage2/generate"))]
    assert len(tasks) == 4 + 3 + 4 and all(e["executor"] == "ray" and e["pid"] != os.getpid() for e in tasks)
    assert len(remote["evaluate"]["tasks"]) == 5  # the base model and the 4 preference models
    assert "executor" not in remote["score"]  # scoring and selection stay in this process


def test_tasks_land_on_both_nodes(ray_run, cluster):
    nodes = {n.node_id for n in cluster.list_all_nodes()}
    stage1 = _steps(ray_run, "stage1/pref")
    assert len(stage1) == 4 and {e["node"] for e in stage1.values()} == nodes
    assert (ray_run / "report.json").exists()


def _kill_after_first_checkpoint(marker: str):
    """A worker setup hook: the first training checkpoint any worker saves is its last act (SIGKILL);
    `marker` makes it happen once, so the retried task runs on."""

    def install() -> None:
        from paretohqd.policy import sft

        save = sft._save_checkpoint

        def save_then_die(*args, **kwargs) -> None:
            save(*args, **kwargs)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        sft._save_checkpoint = save_then_die

    return install


def test_a_killed_task_is_retried_and_resumes_from_its_checkpoint(local_run, work, chaos_assets, cluster, monkeypatch):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels by value to the workers
    marker = work / "killed"
    env = executor.runtime_env
    monkeypatch.setattr(executor, "runtime_env",
                        lambda: {**env(), "worker_process_setup_hook": _kill_after_first_checkpoint(str(marker))})
    sets = _sets(chaos_assets, work, "killed", "method=stage1-only", "executor.kind=ray",
                 f"executor.address={cluster.address}")
    root = pipeline.run(load_config("configs/demo.yaml", sets))

    killed = int(marker.read_text())
    resumed = [p.parent.name for p in root.glob("stage1/pref-*/train.json") if json.loads(p.read_text())["resumed_at"]]
    assert len(resumed) == 1  # the killed one, resumed at its checkpoint (train.steps 4, save_every 2)
    assert json.loads((root / "stage1" / resumed[0] / "train.json").read_text())["resumed_at"] == 2
    assert killed not in {e["pid"] for e in _steps(root, "stage1/pref").values()}
    _same_outputs(local_run, root, ["stage1/selection.parquet"])
