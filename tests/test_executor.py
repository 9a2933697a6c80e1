"""`executor: ray` (issue 14). Without Ray: `RunFolder.fan_out` with a stand-in runner records each
step from its task, only its own files, and a failed task's error comes once the others are
recorded; a step's function in a task cannot write the manifest; a node that cannot see the run
folder stops the run with one line naming it. With Ray: a tiny real run (`conftest.tiny_run_overrides`, 4 preferences) whose
independent units are Ray tasks on two nodes simulated on this machine (`ray.cluster_utils.Cluster`,
1 CPU each, so that concurrent tasks must spread) ends as the same run in one process does: the
same selections, stage-2 pools and evaluation answers, adapters equal within float noise (every
torch computes with 1 thread, the local run too), though one task's worker was SIGKILLed right
after its first checkpoint: Ray retried the task, which resumed from it."""

import json
import os
import pickle
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from paretohqd.testing import tiny_run_overrides
from paretohqd import executor, pipeline
from paretohqd.config import Config, ConfigError, load_config
from paretohqd.io import InputError, write_json
from paretohqd.runfolder import RunFolder, config_differences

OBJECT_STORE = 100 * 2**20  # bytes per node (Ray's floor is 75 MiB)


# Without Ray -------------------------------------------------------------------------------------


def _fake_runner(calls: list, fail: set[int] = frozenset()):
    """Runs the jobs inline and answers as Ray tasks would (job i fails if i is in `fail`)."""

    def run(kind, jobs):
        calls.append((kind, len(jobs)))
        out = []
        for i, job in enumerate(jobs):
            if i in fail:
                out.append(InputError(f"job {i} failed"))
                continue
            job()
            out.append({"wall_s": 2.0, "device": "H200", "n_devices": 0.5, "executor": "ray", "node": f"n{i}",
                        "host": "h", "pid": 100 + i})
        return out

    return run


def _models(r: RunFolder, ran: list) -> None:
    """Three independent models, each writing its folder, then a pool each in one shared folder."""
    with r.fan_out("train"):
        for i in range(3):
            def fit(i=i) -> None:
                ran.append(i)
                write_json({"w": i}, r.path("stage1", f"pref-0{i}", "adapter.json"))
                write_json({"i": i}, r.path("stage1", f"pref-0{i}", "train.json"))
            r.step(f"stage1/pref-0{i}", r.path("stage1", f"pref-0{i}", "train.json"), fit)
    with r.fan_out("generate"):
        for i in range(2):
            r.step(f"pool {i}", r.path("stage2", f"pool-{i}.json"),
                   lambda i=i: write_json({"i": i}, r.path("stage2", f"pool-{i}.json")))


def test_fan_out_starts_its_steps_together_and_records_each_from_its_task(tmp_path):
    r, calls, ran = RunFolder(Config(name="r", runs_dir=str(tmp_path))), [], []
    r.runner = _fake_runner(calls)
    _models(r, ran)
    assert calls == [("train", 3), ("generate", 2)] and ran == [0, 1, 2]
    steps = json.loads(r.path("manifest.json").read_text())["steps"]
    assert sorted(steps["stage1/pref-01"]["outputs"]) == ["stage1/pref-01/adapter.json", "stage1/pref-01/train.json"]
    assert list(steps["pool 1"]["outputs"]) == ["stage2/pool-1.json"]  # (its folder is shared: the marker alone)
    e = steps["stage1/pref-02"]
    assert (e["node"], e["pid"], e["device"], e["device_s"]) == ("n2", 102, "H200", 1.0)
    r2 = RunFolder(r.cfg)
    r2.runner = _fake_runner(calls)
    _models(r2, ran)
    assert calls[2:] == [] and ran == [0, 1, 2]  # all done: nothing started


def test_a_steps_parts_run_as_tasks_are_charged_to_it(tmp_path):
    r, calls, ran = RunFolder(Config(name="r", runs_dir=str(tmp_path))), [], []
    r.runner = _fake_runner(calls)

    def evaluate() -> None:  # as the evaluate step: each model's answers a task, the rest here
        r.run_all("generate", [lambda i=i: ran.append(i) for i in range(2)])
        write_json({}, r.path("evaluate", "responses.json"))

    r.step("evaluate", r.path("evaluate", "responses.json"), evaluate)
    e = json.loads(r.path("manifest.json").read_text())["steps"]["evaluate"]
    assert ran == [0, 1] and [t["node"] for t in e["tasks"]] == ["n0", "n1"]
    assert e["device_s"] == pytest.approx(e["wall_s"] + 2 * 2.0 * 0.5, abs=2e-3)  # its own, and the tasks' device time


def test_a_failed_task_is_raised_once_the_others_are_recorded(tmp_path):
    r, calls, ran = RunFolder(Config(name="r", runs_dir=str(tmp_path))), [], []
    r.runner = _fake_runner(calls, fail={1})
    with pytest.raises(InputError, match="job 1 failed"):
        _models(r, ran)
    assert sorted(json.loads(r.path("manifest.json").read_text())["steps"]) == ["stage1/pref-00", "stage1/pref-02"]
    r2 = RunFolder(r.cfg)
    r2.runner = _fake_runner(calls)
    _models(r2, ran)
    assert ran == [0, 2, 1]  # the rerun trains the failed model alone
    assert len(json.loads(r.path("manifest.json").read_text())["steps"]) == 5


def test_a_step_function_in_a_task_cannot_write_the_manifest(tmp_path):
    r = RunFolder(Config(name="r", runs_dir=str(tmp_path)))
    r.runner = _fake_runner([])
    there = pickle.loads(pickle.dumps(r))  # as a task receives it with a step's closure
    assert there.runner is None
    with pytest.raises(RuntimeError, match="inside a task; its driver records it"):
        there.record("select", {})


def test_a_node_that_cannot_see_the_run_folder_stops_the_run(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    elsewhere = tmp_path / "node-disk"  # what the node sees at the run folder's path: its own disk

    class Task:
        def __init__(self, fn):
            self.fn = fn

        def options(self, **_):
            return self

        def remote(self, path, token, node):
            return self.fn(str(elsewhere / Path(path).name), token, node)

    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "f00d" * 14, "NodeManagerAddress": "10.0.0.7", "Alive": True}])
    monkeypatch.setattr(ray, "remote", Task)
    monkeypatch.setattr(ray, "get", lambda x: x)
    root = tmp_path / "runs" / "r"
    with pytest.raises(InputError, match=r"executor: node 10\.0\.0\.7 \(f00df00df00d\) cannot share the run folder "
                                         rf"{root}: it does not see {elsewhere}/\.probe-\w+; every node needs it"):
        executor.check_shared_storage(root)
    assert list(root.iterdir()) == []  # the probe is gone


def test_executor_settings(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="executor.train.num_gpus: .*a fraction of one GPU or whole GPUs"):
        load_config(None, ["executor.train.num_gpus=1.5"])
    r = RunFolder(Config(name="r", runs_dir=str(tmp_path)))  # made locally, resumed on a cluster: the same run
    assert config_differences(load_config(None, [f"runs_dir={tmp_path}", "name=r", "executor.kind=ray"]), r.root) == []
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert executor.executor_problems(load_config(None, ["executor.kind=ray"]).executor, 1) == [
        "executor.kind: ray needs Ray, which is not installed here; `pip install paretohqd[ray]` or set executor.kind=local"]


# With Ray: a tiny real run on two simulated nodes ------------------------------------------------


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
    ray = pytest.importorskip("ray")
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
    """The Ray run, whose first worker to save a training checkpoint is SIGKILLed right after it
    (`_kill_after_first_checkpoint`): Ray retries that task, which resumes from the checkpoint."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels by value to the workers
    env = executor.runtime_env
    sets = _sets(chaos_assets, work, "ray", "executor.kind=ray", f"executor.address={cluster.address}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executor, "runtime_env", lambda: {
            **env(), "worker_process_setup_hook": _kill_after_first_checkpoint(str(work / "killed"))})
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

        save = sft.save_checkpoint

        def save_then_die(*args, **kwargs) -> None:
            save(*args, **kwargs)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        sft.save_checkpoint = save_then_die

    return install


def test_a_killed_task_is_retried_and_resumes_from_its_checkpoint(ray_run, work):
    """In the Ray run (which equals the local run: above), one stage-1 task's worker died right after
    its first checkpoint; the retried task resumed from it, in another worker."""
    killed = int((work / "killed").read_text())
    resumed = [p.parent.name for p in ray_run.glob("stage1/pref-*/train.json") if json.loads(p.read_text())["resumed_at"]]
    assert len(resumed) == 1  # the killed one, resumed at its checkpoint (train.steps 4, save_every 2)
    assert json.loads((ray_run / "stage1" / resumed[0] / "train.json").read_text())["resumed_at"] == 2
    assert killed not in {e["pid"] for e in _steps(ray_run, "stage1/pref").values()}
