"""Reward heads: Bradley-Terry loss, training on toy data with a known answer, save/load, MiniLM."""

import json
import math

import numpy as np
import pytest
import torch

from paretohqd.config import RewardsConfig
from paretohqd.data.transcript import last_turn
from paretohqd.rewards.minilm import (
    HeadRewardModel, RewardHead, bt_loss, feature_dim, features, load_head_model, save_head,
)
from paretohqd.rewards.heads import auc, read_jokes, split, train_bt, train_classifier


def _cfg(tmp_path, **kw):
    return RewardsConfig(dir=str(tmp_path), epochs=kw.pop("epochs", 60), lr=kw.pop("lr", 1e-2), **kw)


def test_bt_loss_values():
    """-log sigmoid(m): log 2 at margin 0, log(1+e^-2) at margin 2, symmetric the wrong way."""
    assert bt_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    assert bt_loss(torch.tensor([3.0]), torch.tensor([1.0])).item() == pytest.approx(math.log1p(math.exp(-2)))
    assert bt_loss(torch.tensor([1.0]), torch.tensor([3.0])).item() == pytest.approx(math.log1p(math.exp(2)))


def test_bt_loss_gradient_pushes_chosen_up():
    c, r = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    bt_loss(c, r).backward()
    assert c.grad.item() == pytest.approx(-0.5) and r.grad.item() == pytest.approx(0.5)


def _toy_pairs(n=600, d=8, seed=0):
    """Pairs ranked by a hidden linear reward w.x: a linear BT head must recover w's direction."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    first = (a @ w > b @ w)[:, None]
    return w, torch.where(first, a, b), torch.where(first, b, a)


def test_linear_bt_head_recovers_hidden_reward(tmp_path):
    w, chosen, rejected = _toy_pairs()
    head, m = train_bt(chosen, rejected, _cfg(tmp_path, hidden=0))
    learned = head.net.weight.detach()[0]
    assert torch.nn.functional.cosine_similarity(learned, w, dim=0) > 0.98
    assert m["held_out_accuracy"] > 0.95 and m["held_out_pairs"] == 120 and m["train_pairs"] == 480


def test_bt_head_on_random_labels_is_near_chance(tmp_path):
    """Honest held-out accuracy: with labels independent of features it must sit near 0.5."""
    g = torch.Generator().manual_seed(1)
    chosen, rejected = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    _, m = train_bt(chosen, rejected, _cfg(tmp_path, hidden=0))
    assert 0.4 < m["held_out_accuracy"] < 0.6


def test_training_is_deterministic_given_seed(tmp_path):
    _, chosen, rejected = _toy_pairs(200)
    h1, m1 = train_bt(chosen, rejected, _cfg(tmp_path, hidden=16, epochs=5))
    h2, m2 = train_bt(chosen, rejected, _cfg(tmp_path, hidden=16, epochs=5))
    h3, _ = train_bt(chosen, rejected, _cfg(tmp_path, hidden=16, epochs=5, seed=1))
    for (k, a), b in zip(h1.state_dict().items(), h2.state_dict().values()):
        assert torch.equal(a, b), k
    assert m1 == m2
    assert not torch.equal(h1.net[0].weight, h3.net[0].weight)


def test_classifier_separates_two_clusters(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 4, generator=g) + 2, torch.randn(200, 4, generator=g) - 2])
    y = torch.cat([torch.ones(200), torch.zeros(200)])
    head, m = train_classifier(x, y, _cfg(tmp_path))
    assert m["held_out_auc"] > 0.99 and m["held_out_accuracy"] > 0.95
    assert head(torch.full((1, 4), 2.0)).item() > 0 > head(torch.full((1, 4), -2.0)).item()


def test_auc_matches_hand_count():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered right
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5  # a tie counts half


def test_split_is_seeded_and_disjoint():
    tr, ho = split(100, 0.2, 3)
    assert len(ho) == 20 and not set(tr) & set(ho) and len(set(tr) | set(ho)) == 100
    assert np.array_equal(ho, split(100, 0.2, 3)[1]) and not np.array_equal(ho, split(100, 0.2, 4)[1])


def test_features_and_last_turn():
    p, r = np.ones((2, 384), np.float32), np.full((2, 384), 2, np.float32)
    f = features(p, r, "pair")
    assert f.shape == (2, feature_dim("pair")) and f[0, -1].item() == 2.0
    assert features(None, r, "response").shape == (2, feature_dim("response"))
    assert last_turn("\n\nHuman: a\n\nAssistant: b\n\nHuman: c?") == "c?"
    assert last_turn("no turns") == "no turns"


def test_read_jokes_errors(tmp_path):
    with pytest.raises(ValueError, match="no such jokes file"):
        read_jokes(tmp_path / "nope.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("3\tA joke\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected `score<TAB>joke`"):
        read_jokes(bad)


@pytest.fixture(scope="module")
def encoder():
    from paretohqd.rewards.minilm import Encoder

    return Encoder(max_length=64)


def test_minilm_embeddings_head_round_trip(tmp_path, encoder):
    """Real MiniLM: unit-norm embeddings, a saved head reloads (safetensors + JSON) to the same scores."""
    emb = encoder.embed(["I love this.", "I love this.", "Terrible, awful day."])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.array_equal(emb[0], emb[1])
    torch.manual_seed(0)
    head = RewardHead(feature_dim("pair"), 8)
    meta = {"inputs": "pair", "hidden": 8}
    save_head(head, meta, tmp_path / "minilm-helpful")
    assert sorted(p.name for p in (tmp_path / "minilm-helpful").iterdir()) == ["config.json", "model.safetensors"]
    direct = HeadRewardModel("minilm-helpful", head, meta, encoder)
    loaded = load_head_model(tmp_path / "minilm-helpful", RewardsConfig(dir=str(tmp_path), max_length=64),
                             encoders={("cpu", "float32", 64): encoder})
    prompts, responses = ["\n\nHuman: Hi?", "\n\nHuman: Help?"], ["Hello!", "No."]
    assert np.allclose(direct.score(prompts, responses), loaded.score(prompts, responses))
    assert loaded.fingerprint == direct.fingerprint


def test_embedding_store_reuses_and_extends(tmp_path):
    """Texts embedded once across Encoder instances (runs); a new instance reads the store."""
    from paretohqd.rewards.minilm import Encoder

    calls = []
    first = Encoder(max_length=64, store=tmp_path)
    real = first._encode
    first._encode = lambda texts, bs: calls.append(list(texts)) or real(texts, bs)
    a = first.embed(["one", "two", "one"])
    b = first.embed(["two", "three"])
    second = Encoder(max_length=64, store=tmp_path)
    second._encode = lambda texts, bs: pytest.fail(f"re-embedded {texts}")
    c = second.embed(["three", "one"])
    assert sorted(map(sorted, calls)) == [["one", "two"], ["three"]]
    assert np.array_equal(a[1], b[0]) and np.array_equal(a[0], a[2])
    assert np.array_equal(c[0], b[1]) and np.array_equal(c[1], a[0])
    assert len(list((tmp_path / first.fingerprint).glob("emb-*.safetensors"))) == 2


def _hh_file(folder, subset, n):
    import gzip
    import json

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{subset}.jsonl.gz", "wt") as f:
        for i in range(n):
            p = f"\n\nHuman: question {i} about {subset}?\n\nAssistant:"
            f.write(json.dumps({"chosen": p + f" A careful answer number {i}.", "rejected": p + " No."}) + "\n")
    return folder


def test_train_save_load_and_ensure_trained(tmp_path):
    """`reward train` end to end on tiny real files: heads saved (safetensors + JSON), loadable by
    name, metrics recorded; `ensure_trained` then trains nothing."""
    from paretohqd.rewards import load_reward_models
    from paretohqd.rewards.heads import ensure_trained, train_heads

    hh = _hh_file(tmp_path / "hh", "helpful-base", 12)
    jokes = tmp_path / "jokes.tsv"
    jokes.write_text("".join(f"{i % 3}\tWhy did chicken {i} cross the road? To get to the other side!\n" for i in range(12)))
    cfg = RewardsConfig(dir=str(tmp_path / "rewards"), epochs=3, humor_positives=8, humor_negatives=8,
                        jokes=str(jokes), max_length=32, models={"helpful": "minilm-helpful", "humor": "minilm-humor"})
    results = ensure_trained(cfg, ["minilm-helpful", "minilm-humor"], sources=[str(hh)])
    assert set(results) == {"minilm-helpful", "minilm-humor"}
    assert results["minilm-helpful"]["held_out_pairs"] == 2 and results["minilm-humor"]["held_out_examples"] == 3
    assert 0 <= results["minilm-humor"]["held_out_auc"] <= 1
    meta = json.loads((tmp_path / "rewards" / "minilm-humor" / "config.json").read_text())
    assert meta["inputs"] == "response" and meta["metrics"] == results["minilm-humor"]
    assert ensure_trained(cfg, ["minilm-helpful"], sources=[str(hh)]) == {}
    models = load_reward_models(cfg)
    assert models["helpful"].encoder is models["humor"].encoder  # one encoder for every head
    scores = models["helpful"].score(["\n\nHuman: hi?"], ["A careful answer."])
    assert scores.shape == (1,) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="no harmless-base pairs in data.sources"):
        train_heads(cfg, ["minilm-harmless"], sources=[str(hh)])


def test_cli_reward_train_prints_held_out_metrics(tmp_path):
    from typer.testing import CliRunner

    from paretohqd.cli import app

    hh = _hh_file(tmp_path / "hh", "helpful-base", 12)
    jokes = tmp_path / "jokes.tsv"
    jokes.write_text("".join(f"1\tKnock knock {i}. Who's there? Lettuce.\n" for i in range(10)))
    res = CliRunner().invoke(app, [
        "reward", "train", "--only", "humor", "--set", f"rewards.dir={tmp_path / 'r'}", "--set", f"rewards.jokes={jokes}",
        "--set", f"data.sources=[{hh}]", "--set", "rewards.humor_positives=6", "--set", "rewards.humor_negatives=6",
        "--set", "rewards.max_length=32"])
    assert res.exit_code == 0, res.output
    assert "minilm-humor" in res.output and "held-out AUC" in res.output
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert list(saved) == ["minilm-humor"] and f"{saved['minilm-humor']['held_out_auc']:.3f}" in res.output
