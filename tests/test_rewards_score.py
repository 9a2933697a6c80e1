"""The scoring engine: cache, resume after a kill, shared embeddings, loud failures, stats."""

import numpy as np
import pandas as pd
import pytest
import torch

from paretohqd.io import InputError
from paretohqd.rewards.minilm import HeadRewardModel, RewardHead, feature_dim
from paretohqd.rewards.score import score_frame, stats


class Fake:
    """A reward model whose score is a known function of the text; records what it scored and can
    die after `fail_after` samples (a simulated kill)."""

    def __init__(self, name="fake", fail_after=None, nan_for=None):
        self.name, self.fingerprint = name, f"fp-{name}"
        self.seen, self.fail_after, self.nan_for = [], fail_after, nan_for

    def score(self, prompts, responses, *, batch_size=32):
        self.seen += list(responses)
        if self.fail_after is not None and len(self.seen) > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return np.array([np.nan if r == self.nan_for else len(p) + 0.5 * len(r) for p, r in zip(prompts, responses)])


def _frame(n=50):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": [f"s{i:03d}" for i in range(n)],
        "prompt": [f"\n\nHuman: q{i}" for i in range(n)],
        "response": ["x" * int(k) for k in rng.integers(1, 60, n)],
        "source": "t",
    })


def test_scores_and_columns(tmp_path):
    df = _frame(10)
    out = score_frame(df, {"a": Fake()}, cache_dir=tmp_path, progress=False)
    assert list(out.columns) == list(df.columns) + ["a"]
    expected = df["prompt"].str.len() + 0.5 * df["response"].str.len()
    assert np.allclose(out["a"], expected) and out["a"].dtype == np.float64


def test_input_not_mutated(tmp_path):
    df = _frame(10)
    before = df.copy()
    score_frame(df, {"a": Fake()}, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, before)


def test_rerun_scores_only_new_rows(tmp_path):
    df = _frame(30)
    score_frame(df.iloc[:20], {"a": Fake()}, cache_dir=tmp_path, progress=False)
    again = Fake()
    out = score_frame(df, {"a": again}, cache_dir=tmp_path, progress=False)
    assert sorted(again.seen) == sorted(df["response"].iloc[20:]) and out["a"].notna().all()
    third = Fake()
    score_frame(df, {"a": third}, cache_dir=tmp_path, progress=False)
    assert third.seen == []


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    df = _frame(50)
    reference = score_frame(df, {"a": Fake()}, cache_dir=tmp_path / "clean", progress=False)
    with pytest.raises(KeyboardInterrupt):
        score_frame(df, {"a": Fake(fail_after=20)}, cache_dir=tmp_path / "run", chunk_size=8, progress=False)
    chunks = list((tmp_path / "run" / "fp-fake").glob("chunk-*.parquet"))
    assert len(chunks) == 2  # chunks 1-2 (16 rows) finished; the third died in flight
    assert not list((tmp_path / "run" / "fp-fake").glob(".*"))  # no temp file left behind
    resumed = Fake()
    out = score_frame(df, {"a": resumed}, cache_dir=tmp_path / "run", chunk_size=8, progress=False)
    assert len(resumed.seen) == 34  # only the unfinished rows
    pd.testing.assert_frame_equal(out, reference)


def test_batches_run_longest_first(tmp_path):
    m = Fake()
    score_frame(_frame(40), {"a": m}, cache_dir=tmp_path, chunk_size=5, progress=False)
    lengths = [len(r) for r in m.seen]
    assert lengths == sorted(lengths, reverse=True)


def test_duplicate_ids_scored_once(tmp_path):
    df = pd.concat([_frame(5), _frame(5)], ignore_index=True)
    m = Fake()
    out = score_frame(df, {"a": m}, cache_dir=tmp_path, progress=False)
    assert len(m.seen) == 5 and len(out) == 10 and out["a"].notna().all()


def test_nan_fails_naming_the_sample(tmp_path):
    df = _frame(10)
    bad = df["response"].iloc[3]
    with pytest.raises(ValueError, match=r"reward model 'fake' \(objective 'a'\) scored sample id 's003' as nan"):
        score_frame(df, {"a": Fake(nan_for=bad)}, cache_dir=tmp_path, progress=False)
    assert not list((tmp_path / "fp-fake").glob("chunk-*"))  # nothing of a NaN chunk is cached


def test_bad_tables(tmp_path):
    with pytest.raises(InputError, match=r"lacks column\(s\) \['response'\]"):
        score_frame(_frame(3).drop(columns="response"), {"a": Fake()}, cache_dir=tmp_path, progress=False)
    df = _frame(3)
    df.loc[1, "prompt"] = None
    with pytest.raises(InputError, match="sample id 's001': prompt must be text"):
        score_frame(df, {"a": Fake()}, cache_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"already has column\(s\) \['source'\]"):
        score_frame(_frame(3), {"source": Fake()}, cache_dir=tmp_path, progress=False)


class CountingEncoder:
    """Stands in for MiniLM: a deterministic embedding per text, counting texts embedded."""

    fingerprint = "enc"

    def __init__(self):
        self.texts = 0

    def embed(self, texts, *, batch_size=32):
        self.texts += len(texts)
        return np.stack([np.random.default_rng(len(t)).standard_normal(384) for t in texts]).astype(np.float32)


def test_heads_share_one_encoder_pass(tmp_path):
    enc = CountingEncoder()
    torch.manual_seed(0)
    heads = {o: HeadRewardModel(f"minilm-{o}", RewardHead(feature_dim(i), 0), {"inputs": i}, enc)
             for o, i in [("helpful", "pair"), ("harmless", "pair"), ("humor", "response")]}
    df = _frame(12)
    out = score_frame(df, heads, cache_dir=tmp_path, progress=False)
    assert enc.texts == 2 * len(df)  # prompts once + responses once, not once per head
    for o, h in heads.items():  # and the shared pass gives what each head alone gives
        assert np.allclose(out[o], h.score(df["prompt"].tolist(), df["response"].tolist()))
    assert len({h.fingerprint for h in heads.values()}) == 3


def test_stats():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    assert stats(df, ["a"]) == {"a": {"min": 1.0, "max": 3.0, "mean": 2.0, "std": pytest.approx(np.sqrt(2 / 3))}}
