"""MODPO: its loss against hand-worked numbers and against DPO, its pairs, and tiny whole runs for
two and three objectives on the random 2-layer Llama (`chaos_assets`)."""

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd import pipeline
from paretohqd.config import ConfigError, load_config
from paretohqd.data.prepare import sample_id
from paretohqd.methods import modpo

from paretohqd.testing import tiny_run_overrides


def _t(*x):
    return torch.tensor(x, dtype=torch.float64)


# Loss --------------------------------------------------------------------------------------------


def test_loss_matches_hand_computed_values():
    """Two pairs, beta 0.5, w = (w_k, w_-k) = (0.25, 0.75), margin rewards r_-k:
    pair 1: h(y_w) = -4 - (-5) = 1, h(y_l) = -6 - (-5.5) = -0.5, margin 0.75 * (1.0 - (-1.0)) = 1.5,
            logits = (0.5 * 1.5 - 1.5) / 0.25 = -3, loss = log(1 + e^3);
    pair 2: h(y_w) = -2 - (-2) = 0, h(y_l) = -3 - (-4) = 1, margin 0.75 * (-1.0 - 0.0) = -0.75,
            logits = (0.5 * -1 + 0.75) / 0.25 = 1, loss = log(1 + e^-1)."""
    margin = modpo.margins(np.array([[9.0, 1.0], [9.0, -1.0]]), np.array([[0.0, -1.0], [0.0, 0.0]]),
                           np.array([0.25, 0.75]), 0)
    assert margin.tolist() == [1.5, -0.75]  # objective 0's own rewards (9 vs 0) are left out
    loss = modpo.modpo_loss(_t(-4.0, -2.0), _t(-6.0, -3.0), _t(-5.0, -2.0), _t(-5.5, -4.0), torch.from_numpy(margin),
                            beta=0.5, pair_weight=0.25)
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(3)), math.log(1 + math.exp(-1))], rel=1e-12)


def test_zero_margin_weight_is_dpo():
    """w = (1, 0): TRL's DPO sigmoid loss, -logsigmoid(beta * (chosen log-ratio - rejected log-ratio)),
    written out by hand (trl/trainer/dpo_trainer.py, loss_type "sigmoid", label_smoothing 0)."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) * 10 for _ in range(4))
    z_c, z_r = np.random.default_rng(0).normal(size=(2, 6, 3))  # margin rewards that must not count
    margin = torch.from_numpy(modpo.margins(z_c, z_r, np.array([1.0, 0.0, 0.0]), 0))
    ours = modpo.modpo_loss(pc, pr, rc, rr, margin, beta=0.1, pair_weight=1.0)
    dpo = -torch.nn.functional.logsigmoid(0.1 * ((pc - rc) - (pr - rr)))
    torch.testing.assert_close(ours, dpo, rtol=0, atol=1e-12)


def test_trained_weights_floor_w_k_and_stay_on_the_simplex():
    np.testing.assert_allclose(modpo.trained_weights(np.array([0.0, 0.5, 0.5]), 0, 0.1), [0.1, 0.45, 0.45])
    np.testing.assert_allclose(modpo.trained_weights(np.array([0.05, 0.95]), 0, 0.1), [0.1, 0.9])
    np.testing.assert_array_equal(modpo.trained_weights(np.array([0.3, 0.7]), 0, 0.1), [0.3, 0.7])
    np.testing.assert_allclose(modpo.trained_weights(np.array([0.6, 0.0, 0.4]), 1, 0.2), [0.48, 0.2, 0.32])
    w = np.array([0.0, 1.0])
    modpo.trained_weights(w, 0, 0.1)
    assert w.tolist() == [0.0, 1.0]  # the input is not changed


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=4).filter(lambda x: sum(x) > 0), st.floats(0.01, 1.0))
def test_trained_weights_sum_to_one_and_keep_the_others_ratios(raw, floor):
    w = np.array(raw) / sum(raw)
    t = modpo.trained_weights(w, 0, floor)
    assert abs(t.sum() - 1) < 1e-9 and t[0] == max(w[0], floor)
    if w[0] < 1:  # the other weights keep their ratios
        np.testing.assert_allclose(t[1:] * (1 - w[0]), w[1:] * (1 - t[0]), atol=1e-12)


def test_sequence_logps_sum_response_tokens_only(tiny_policy):
    """`sequence_logps` of a left-padded batch equals the sum computed one sequence at a time, unpadded."""
    from paretohqd.policy.load import load_policy
    from paretohqd.policy.sft import collate

    model = load_policy(tiny_policy).eval()
    samples = [([5, 6, 7, 8, 9], 3), ([10, 11, 12], 1)]
    got = modpo.sequence_logps(model, collate(samples, pad_id=0))
    for (ids, n_prompt), value in zip(samples, got):
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
        want = sum(logp[t - 1, ids[t]] for t in range(n_prompt, len(ids)))
        assert value.item() == pytest.approx(want.item(), abs=1e-4)


# Pairs -------------------------------------------------------------------------------------------


def _hh(prompt: str, answer: str) -> str:
    return f"\n\nHuman: {prompt}\n\nAssistant: {answer}"


def test_pairs_keep_training_ids_of_the_pair_objective_chosen_first(tmp_path):
    rows = {"helpful-base": [("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "No idea."),
                             ("Name a colour.", "Blue is a colour.", "Eggs."),
                             ("Held out?", "This prompt is held out.", "So is this.")],
            "harmless-base": [("How do I pick a lock?", "I can't help with that.", "Use a pin.")]}
    for subset, triples in rows.items():
        with gzip.open(tmp_path / f"{subset}.jsonl.gz", "wt") as f:
            for p, chosen, rejected in triples:
                f.write(json.dumps({"chosen": _hh(p, chosen), "rejected": _hh(p, rejected)}) + "\n")
    ids = {(p, a): sample_id(f"\n\nHuman: {p}", a) for t in rows.values() for p, *answers in t for a in answers}
    # the training split lacks the held-out prompt's samples and one answer of "Name a colour."
    train = pd.DataFrame({"id": [i for (p, a), i in ids.items() if p != "Held out?" and a != "Eggs."]})
    cfg = load_config(None, [f"data.sources=[{tmp_path}]"])
    pairs = modpo.build_pairs(cfg, train)
    assert modpo.objective(cfg) == "helpful"  # the first objective with labelled pairs
    assert pairs.to_dict("records") == [{"chosen_id": ids["How do I boil an egg?", "Put it in boiling water for 8 minutes."],
                                         "rejected_id": ids["How do I boil an egg?", "No idea."],
                                         "source": "helpful-base"}]
    harmless = modpo.build_pairs(cfg.model_copy(update={"modpo": cfg.modpo.model_copy(update={"objective": "harmless"})}),
                                 train)
    assert harmless[["chosen_id", "rejected_id"]].values.tolist() == [[ids["How do I pick a lock?", "I can't help with that."],
                                                                      ids["How do I pick a lock?", "Use a pin."]]]
    with pytest.raises(ConfigError, match="no training pair is labelled for 'helpful'"):
        modpo.build_pairs(load_config(None, [f"data.sources=[{tmp_path}]", "modpo.subsets={helpful-online: helpful}"]),
                          train)
    assert modpo.check(cfg) == []
    assert modpo.check(load_config(None, ["modpo.subsets={x: humor}"])) == [
        "modpo: no objective of rewards.models (helpful, harmless) has pair labels in modpo.subsets ({'x': 'humor'}); "
        "map a data source to one, e.g. modpo.subsets={helpful-base: helpful}"]
    assert modpo.check(load_config(None, ["modpo.objective=humor"])) == [
        "modpo.objective: 'humor' is not an objective; choose one of rewards.models (helpful, harmless)"]


def test_steps_and_epochs_are_one_setting():
    with pytest.raises(ConfigError, match=r"modpo: .*steps \(5\) and epochs \(2.0\) both set .*modpo.epochs=null"):
        load_config(None, ["modpo.steps=5", "modpo.epochs=2"])
    with pytest.raises(ConfigError, match="modpo.epochs: Input should be greater than 0"):
        load_config(None, ["modpo.epochs=0"])
    with pytest.raises(ConfigError, match="modpo.init: Input should be 'base' or 'sft'"):
        load_config(None, ["modpo.init=dpo"])


# Whole runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("objectives", [2, 3])
def test_tiny_run_trains_evaluates_and_reports(objectives, tmp_path, chaos_assets):
    a = chaos_assets
    sets = tiny_run_overrides(a, tmp_path / "runs", tmp_path / "rewards", f"modpo{objectives}")
    sets += ["method=modpo", "modpo.batch_size=2", "modpo.lr=1e-2", "sft_start.steps=2"]
    # two objectives: modpo.steps from the SFT start; three: modpo.epochs, from the base
    sets += ["modpo.steps=2"] if objectives == 2 else ["modpo.epochs=0.1", "modpo.init=base"]
    if objectives == 3:  # a third objective (the helpful model again): the margin comes from two reward models
        sets += [f"rewards.models={{helpful: {a['helpful']}, harmless: {a['harmless']}, humor: {a['helpful']}}}",
                 "select.preferences=[[0.0, 0.5, 0.5], [0.6, 0.2, 0.2]]"]
    root = pipeline.run(load_config("configs/demo.yaml", sets))
    pairs = pd.read_parquet(root / "modpo" / "pairs.parquet")
    train_ids = set(pd.read_parquet(root / "data" / "train.parquet")["id"])
    assert len(pairs) and set(pairs["source"]) == {"helpful-base"}
    assert set(pairs["chosen_id"]) <= train_ids and set(pairs["rejected_id"]) <= train_ids
    steps = 2 if objectives == 2 else math.ceil(0.1 * len(pairs) / 2)
    steps_recorded = json.loads((root / "manifest.json").read_text())["steps"]
    assert ("sft" in steps_recorded) == (objectives == 2) == (root / "sft" / "train.json").exists()
    for i in range(2):
        trained = json.loads((root / "modpo" / f"pref-{i:02d}" / "train.json").read_text())
        assert trained["steps"] == steps and trained["objective"] == "helpful" and len(trained["losses"]) == steps
        assert trained["init"] == (str(root / "sft") if objectives == 2 else "base")
        assert all(math.isfinite(x) for x in trained["losses"]) and 0 <= trained["accuracy_last"] <= 1
        assert (root / "modpo" / f"pref-{i:02d}" / "adapter_model.safetensors").exists()
    first = json.loads((root / "modpo" / "pref-00" / "train.json").read_text())
    assert first["pair_weight"] == 0.1 and math.isclose(sum(first["trained_weights"]), 1.0)  # w_k = 0, floored, on the simplex
    report = json.loads((root / "report.json").read_text())
    models = report["methods"][0]["models"]
    assert [m["model"] for m in models] == ["pref-00", "pref-01"]
    assert all(len(m["mean"]) == objectives and all(map(math.isfinite, m["mean"].values())) for m in models)
    meta = json.loads((root / "evaluate" / "meta.json").read_text())
    assert meta["variant"] == "modpo" and meta["description"].startswith("MODPO (DPO on helpful pairs")
    assert ("from SFT (2 steps)" in meta["description"]) == (objectives == 2)
    df = pd.read_parquet(root / "evaluate" / "responses.parquet")
    assert sorted(df["model"].unique()) == ["base", "pref-00", "pref-01"]


PAIRS = [(([5, 6, 7, 8], 2), ([5, 6, 9], 2)), (([10, 11, 12], 1), ([10, 13, 14, 15], 1))]


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_policy):
    """A LoRA adapter on the tiny policy with random, nonzero B: an SFT model that differs from the base."""
    from peft import get_peft_model

    from paretohqd.config import TrainConfig
    from paretohqd.policy.load import load_policy
    from paretohqd.policy.sft import lora_config

    torch.manual_seed(0)
    model = get_peft_model(load_policy(tiny_policy), lora_config(TrainConfig()))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("sft") / "sft"
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def test_init_sft_starts_from_the_sft_model_and_holds_to_it(tmp_path, tiny_policy, sft_adapter, monkeypatch):
    """With `init`, the first step's policy and reference log-probabilities are the SFT model's (the SFT
    adapter on the base, unmerged), not the base's; the saved model is the SFT adapter plus MODPO's."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from paretohqd.config import PolicyConfig, TrainConfig
    from paretohqd.policy.load import load_policy

    seen = []
    real = modpo.sequence_logps
    monkeypatch.setattr(modpo, "sequence_logps", lambda model, batch: seen.append((real(model, batch), batch)) or seen[-1][0])
    modpo.train_pairs(PAIRS, np.array([0.3, -0.2]), tmp_path / "pref-00", policy=PolicyConfig(model=tiny_policy),
                      cfg=TrainConfig(warmup_steps=0, mixed_precision="no"), steps=1, batch_size=2, lr=1e-2, beta=0.1,
                      pair_weight=0.5, seed=0, pad_id=0, init=sft_adapter)
    (ref, batch), (policy, _) = seen[:2]  # step 1: the reference first (adapter off), then the policy
    sft = PeftModel.from_pretrained(load_policy(tiny_policy), str(sft_adapter)).eval()
    with torch.no_grad():
        want, base = real(sft, batch), real(load_policy(tiny_policy).eval(), batch)  # (4,)
    assert torch.allclose(ref, want, atol=1e-4) and torch.allclose(policy.detach(), want, atol=1e-4)
    assert not torch.allclose(ref, base, atol=1e-2)  # so the base as reference would fail
    out = tmp_path / "pref-00"
    merged = json.loads((out / "merge.json").read_text())
    assert merged["adapters"][0] == str(sft_adapter) and merged["weights"] == [1.0, 1.0]
    assert json.loads((out / "train.json").read_text())["init"] == str(sft_adapter)
    sft_b = [t for k, t in sorted(load_file(sft_adapter / "adapter_model.safetensors").items()) if "lora_B" in k]
    both = [t for k, t in sorted(load_file(out / "adapter_model.safetensors").items()) if "lora_B" in k]
    assert all(torch.allclose(b[:, :16], s) for s, b in zip(sft_b, both))  # rank 16 + 16: the SFT block first
    assert not (tmp_path / ".pref-00.delta").exists()


@pytest.mark.parametrize("init", [False, True])
def test_training_resumes_from_its_checkpoint(init, tmp_path, tiny_policy, sft_adapter, monkeypatch):
    """A kill after step 1's checkpoint (train.save_every 1) loses no step: the rerun starts at step 2
    (from the base, or on the SFT model)."""
    from paretohqd.config import PolicyConfig, TrainConfig

    pairs = PAIRS
    kw = dict(policy=PolicyConfig(model=tiny_policy), cfg=TrainConfig(save_every=1, warmup_steps=0), steps=2,
              batch_size=2, lr=1e-2, beta=0.1, pair_weight=0.5, seed=0, pad_id=0, init=sft_adapter if init else None)

    def fail(*a, **k):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(modpo, "save_model", fail)
        with pytest.raises(RuntimeError, match="killed"):
            modpo.train_pairs(pairs, np.array([0.3, -0.2]), tmp_path / "pref-00", **kw)
    assert json.loads((tmp_path / "pref-00.ckpt" / "state.json").read_text())["step"] == 1
    stats = modpo.train_pairs(pairs, np.array([0.3, -0.2]), tmp_path / "pref-00", **kw)
    assert stats["resumed_at"] == 1 and len(stats["losses"]) == 1 and not (tmp_path / "pref-00.ckpt").exists()
    assert (tmp_path / "pref-00" / "adapter_model.safetensors").exists()
    assert (tmp_path / "pref-00" / "merge.json").exists() == init
