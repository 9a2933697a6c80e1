"""Several processes (issues 19, 29): `torchrun --nproc_per_node 2` on CPU forms one gloo group, as two
GPUs would form an NCCL one. The run trains each model over both processes, splits scoring, stage-2
generation and evaluation over them, writes every file once from the main process, charges both
devices in the manifest, and trains the same adapters, generates the same answers and reports the
same numbers as one process with the same total batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from paretohqd import pipeline
from paretohqd.config import load_config

REPO = Path(__file__).resolve().parents[1]
TRAINING = tuple(f"stage{s}/pref-0{i} w={w}" for s in (1, 2) for i, w in enumerate(("[0.0, 1.0]", "[1.0, 0.0]")))
SPREAD = ("score", "stage2/generate pref-00", "stage2/generate pref-01", "evaluate")
"""The steps whose work the processes split (by generation batch, and by chunk of samples scored);
`stage2/score` is one too, but its 8 answers are one chunk: one process scores them."""


@pytest.fixture(scope="module")
def tiny_rewards(tmp_path_factory) -> dict[str, str]:
    """Two random 1-layer BERT classifiers (1 logit) with MiniLM's tokenizer: real reward models
    through the Hugging Face path, scored in no time."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from paretohqd.rewards.minilm import encoder_path

    tok = AutoTokenizer.from_pretrained(encoder_path())
    folders = {}
    for seed, objective in enumerate(("helpful", "harmless")):
        folder = tmp_path_factory.mktemp(f"reward-{objective}")
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, num_labels=1, max_position_embeddings=512)
        BertForSequenceClassification(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[objective] = str(folder)
    return folders


def _overrides(runs: Path, small_hh, policy: str, rewards: dict[str, str]) -> list[str]:
    # train.batch_size is the total over processes: 4 = 2 per process under torchrun; 2 batches of
    # answers per model (4 stage-2 prompts, 3 held-out ones) and 3 chunks of the ~160 training
    # samples to score, so that both processes have work in those steps
    return [f"runs_dir={runs}", f"data.sources=[{small_hh}]", f"policy.model={policy}",
            f"rewards.models={{helpful: {rewards['helpful']}, harmless: {rewards['harmless']}}}",
            "rewards.dtype=float32", "rewards.chunk_size=64", "select.preferences=2", "select.k=4", "train.steps=3",
            "train.batch_size=4", "train.warmup_steps=0", "train.lr=1e-2", 'train.mixed_precision="no"',
            "stage2.prompts=4", "stage2.steps=1", "evaluate.prompts=3", "evaluate.bootstrap=0",
            "generate.max_new_tokens=8", "generate.batch_size=2"]


def test_two_cpu_processes_train_as_one_group(tmp_path, small_hh, tiny_policy, tiny_rewards):
    sets = _overrides(tmp_path / "runs", small_hh, tiny_policy, tiny_rewards)
    # a score cache each: the second run scores its samples too, rather than read the first's
    one = pipeline.run(load_config("configs/demo.yaml", sets + ["name=one", f"rewards.dir={tmp_path / 'cache-one'}"]))

    # --standalone: a free port on this machine, so parallel test sessions do not collide
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(Path(__file__).with_name("audit_writes.py")), "run", "configs/demo.yaml"]
    for s in sets + ["name=two", f"rewards.dir={tmp_path / 'cache-two'}"]:
        args += ["--set", s]
    audit = tmp_path / "audit"
    # PYTHONPATH: a script's own folder, not the repository, comes first on the import path, and
    # this checkout's paretohqd must run; COLUMNS: rich would wrap the printed lines at 80 columns
    env = {**os.environ, "AUDIT_LOG": str(audit), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "device: cpu x2" in res.stdout
    assert res.stdout.count("run folder:") == 1  # one voice: the other process prints nothing
    two = tmp_path / "runs" / "two"

    # every output lands once, from the main process (rank 0); the manifest is rewritten per step
    audited = {rank: [line.split("\t") for line in Path(f"{audit}.{rank}").read_text().splitlines()] for rank in (0, 1)}
    assert not [path for _, path in audited[1] if Path(path).is_relative_to(two)]  # not even a temp file
    main = [path for event, path in audited[0] if event == "rename" and Path(path).is_relative_to(two)]
    landed = {str(two / f) for f in ("config.yaml", "seed.json", "data/train.parquet", "data/scores.parquet",
                                     "stage1/pref-00", "stage1/pref-01", "stage2/generated-pref-00.parquet",
                                     "stage2/.generated-pref-00.batches/batch-00001.parquet", "stage2/scores.parquet",
                                     "stage2/pref-00", "evaluate/responses/base.parquet",
                                     "evaluate/responses/.base.batches/batch-00001.parquet", "evaluate/responses.parquet",
                                     "report.json")}
    assert landed <= set(main)
    assert {p for p in main if main.count(p) > 1} == {str(two / "manifest.json")}
    assert not [p for p in two.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert json.loads((two / "seed.json").read_text())["processes"] == 2

    # training, scoring, generation and evaluation hold and use both devices; the other steps ran on
    # the main one while the other waited
    steps = json.loads((two / "manifest.json").read_text())["steps"]
    assert set(steps) == {"prepare", "select", "stage2/score", "stage2/select", *TRAINING, *SPREAD}
    for name, e in steps.items():
        busy = 2 if name in TRAINING + SPREAD else 1
        assert (e["n_devices"], e["busy_devices"]) == (2, busy), name
        assert e["device_s"] == pytest.approx(2 * e["wall_s"], abs=2e-3)
        assert e["busy_device_s"] == pytest.approx(busy * e["wall_s"], abs=2e-3)
    one_steps = json.loads((one / "manifest.json").read_text())["steps"]
    assert all((e["n_devices"], e["busy_devices"]) == (1, 1) for e in one_steps.values())

    # half the batch on each process, DDP's average of the halves: the same step as one process.
    # Adam's update hardly depends on the loss scale, so compare what it does not normalise too
    for pref in ("pref-00", "pref-01"):
        a, b = (json.loads((root / "stage1" / pref / "train.json").read_text()) for root in (one, two))
        assert (a["processes"], b["processes"]) == (1, 2)
        assert b["losses"] == pytest.approx(a["losses"], rel=1e-5)
        assert b["grad_norms"] == pytest.approx(a["grad_norms"], rel=1e-4)
        wa, wb = (load_file(root / "stage1" / pref / "adapter_model.safetensors") for root in (one, two))
        assert wa.keys() == wb.keys()
        # float32 noise only: DDP sums the halves in another order, and Adam's m / sqrt(v) turns last-bit
        # differences of tiny gradients into ~1e-5; a wrong split moves them by ~lr (1e-2 here)
        diffs = {k: float((wa[k] - wb[k]).abs().max()) for k in wa}
        assert max(diffs.values()) < 5e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
        assert any(wa[k].abs().sum() > 0 for k in wa if "lora_B" in k)  # it trained (B starts at 0)

    # each batch (and chunk scored) answered by either process as one process answers it: the same
    # stage-2 answers and scores, the same evaluation answers and scores, the same report numbers
    for table in ("data/scores.parquet", "stage2/generated-pref-00.parquet", "stage2/generated-pref-01.parquet",
                  "stage2/scores.parquet", "evaluate/responses.parquet"):
        # (a stage-2 answer's `model` is its adapter's folder, in the run's folder)
        a, b = (pd.read_parquet(root / table).drop(columns=["model"] if table.startswith("stage2") else [])
                for root in (one, two))
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    a, b = (json.loads((root / "report.json").read_text()) for root in (one, two))
    assert list(a["hypervolume"].values()) == list(b["hypervolume"].values())
    numbers = ("hypervolume", "collapse_rate", "models", "base")
    assert [{k: m[k] for k in numbers} for m in a["methods"]] == [{k: m[k] for k in numbers} for m in b["methods"]]


def test_processes_that_cannot_form_a_group_stop_at_once(tmp_path):
    """WORLD_SIZE says 2 but no launcher set up a group: one line, exit 2, nothing run."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    env.pop("MASTER_ADDR", None)
    res = subprocess.run([sys.executable, "-m", "paretohqd", "run", "configs/demo.yaml", "--set",
                          f"runs_dir={tmp_path}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "2 processes were launched but could not form a group" in res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_counts_as_native_only_with_the_cpu_flags_for_it(monkeypatch, avx512_bf16, amx, expected):
    import torch

    from paretohqd.devices import native_bf16

    monkeypatch.delenv("PARETOHQD_NATIVE_BF16", raising=False)
    # oneDNN says yes on any AVX-512 CPU, also where bf16 is emulated (3.5x slower training there)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16("cpu") is expected
    assert native_bf16("mps") is False


@pytest.mark.parametrize("forced", ["0", "1"])
def test_the_environment_overrides_the_cpu_flags_and_auto_follows(monkeypatch, forced):
    import torch

    from paretohqd.devices import native_bf16
    from paretohqd.rewards import resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: forced == "0")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: forced == "0")
    monkeypatch.setenv("PARETOHQD_NATIVE_BF16", forced)
    assert native_bf16("cpu") is (forced == "1")
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if forced == "1" else torch.float32)
    res = subprocess.run([sys.executable, "-m", "paretohqd.devices"], capture_output=True, text=True,
                         env={**os.environ, "PARETOHQD_NATIVE_BF16": forced}, timeout=120)
    assert res.returncode == 0 and f"auto precision on cpu: {'bfloat16' if forced == '1' else 'float32'}" in res.stdout
