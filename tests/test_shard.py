"""Splitting a step's work over the launched processes (issue 29): the round-robin rule and its
inverse, `Ranks.spread`, and the generation and scoring built on it, with ranks simulated by threads
(their collectives by a barrier) so that no process group is needed. `test_processes.py` runs the
real thing under torchrun."""

import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd.config import Config
from paretohqd.devices import Ranks, shard, unshard
from paretohqd.policy import generate as gen
from paretohqd.rewards import score
from paretohqd.rewards.score import score_frame


@settings(deadline=None)  # a busy machine slows any example
@given(st.integers(0, 60), st.integers(1, 8))
def test_the_shards_cover_every_index_once_and_unshard_restores_the_order(n, world):
    parts = [list(shard(n, rank, world)) for rank in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))  # every index, exactly once
    assert all(p == sorted(p) for p in parts)  # each rank in the first order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # even shares
    items = [f"item-{i}" for i in range(n)]
    assert unshard([[items[i] for i in p] for p in parts]) == items


class _Threads:
    """`world` ranks as threads of this process; a collective is three turns of one barrier."""

    def __init__(self, world: int):
        self.world, self.slots, self.turn = world, [None] * world, threading.Barrier(world, timeout=60)

    def exchange(self, rank: int, obj):
        self.turn.wait()
        self.slots[rank] = obj
        self.turn.wait()
        out = list(self.slots)
        self.turn.wait()
        return out

    def run(self, fn) -> list:
        """fn(ranks) on every rank; each rank's result (an exception is raised here)."""
        results: list = [None] * self.world

        def one(rank: int) -> None:
            try:
                results[rank] = fn(_ThreadRanks(self, rank))
            except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
                self.turn.abort()
                results[rank] = e

        threads = [threading.Thread(target=one, args=(r,), name=f"rank-{r}") for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results


class _ThreadRanks(Ranks):
    def __init__(self, group: _Threads, rank: int):
        super().__init__(rank, group.world)
        self.group = group

    def gather(self, obj):
        return self.group.exchange(self.rank, obj)

    def broadcast(self, obj):
        return self.gather(obj)[0]

    def barrier(self) -> None:
        self.group.exchange(self.rank, None)


def test_spread_runs_each_job_once_round_robin_and_returns_them_in_order_everywhere():
    ran, saved = [], []

    def on(ranks: Ranks):
        jobs = [lambda i=i: ran.append((i, ranks.rank)) or i * i for i in range(7)]
        out = ranks.spread(jobs, lambda i, result: saved.append((i, result, threading.current_thread().name)))
        return out, ranks.shares

    results = _Threads(3).run(on)
    assert sorted(ran) == [(i, i % 3) for i in range(7)]
    assert all(out == [i * i for i in range(7)] for out, _ in results)
    assert [shares for _, shares in results] == [3, 2, 2]
    assert saved == [(i, i * i, "rank-0") for i in range(7)]  # the main process saves, in order


class _Fake:
    """A reward model whose score is a known function of the text, recording what it scored."""

    def __init__(self):
        self.name, self.fingerprint, self.seen = "fake", "fp-fake", []

    def score(self, prompts, responses, *, batch_size=32):
        self.seen += list(responses)
        # and on the row's place in its chunk: a chunk cut otherwise scores otherwise
        return np.array([len(p) + 0.5 * len(r) + 1e-3 * j for j, (p, r) in enumerate(zip(prompts, responses))])


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "prompt": [f"\n\nHuman: q{i}" for i in range(n)],
                         "response": ["x" * int(k) for k in rng.integers(1, 60, n)]})


def test_two_ranks_score_their_chunks_and_get_the_scores_of_one_process(tmp_path, monkeypatch):
    df = _frame(50)
    for cache in ("alone", "two"):  # ten scored before, by an earlier run
        score_frame(df.iloc[:10], {"a": _Fake()}, cache_dir=tmp_path / cache, chunk_size=8, progress=False)
    alone = score_frame(df, {"a": _Fake()}, cache_dir=tmp_path / "alone", chunk_size=8, progress=False)
    writers = []
    real_write = score.ScoreCache.write
    monkeypatch.setattr(score.ScoreCache, "write", lambda self, ids, s: writers.append(threading.current_thread().name)
                        or real_write(self, ids, s))
    fakes = [_Fake(), _Fake()]
    outs = _Threads(2).run(lambda ranks: score_frame(df, {"a": fakes[ranks.rank]}, cache_dir=tmp_path / "two",
                                                     chunk_size=8, progress=False, ranks=ranks))
    for out in outs:
        pd.testing.assert_frame_equal(out, alone)
    assert sorted(fakes[0].seen + fakes[1].seen) == sorted(df["response"].iloc[10:])  # the cached ten: not again
    assert fakes[0].seen and fakes[1].seen
    assert writers == ["rank-0"] * 5  # 40 rows in 5 chunks, every cache file by the main process


def _fake_generate(model, tokenizer, batch, cfg, *, seed, fmt, progress):
    return [f"{seed}:{c[0]['content']}" for c in batch], {"new_tokens": len(batch), "seconds": 1e-3}


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_answer_their_batches_and_give_the_answers_of_one_process(tmp_path, monkeypatch, world):
    monkeypatch.setattr(gen, "generate", _fake_generate)
    monkeypatch.setattr(gen, "_answerer", lambda cfg, adapter: threading.current_thread().name)
    cfg = Config(policy={"prompt_format": "hh"}, generate={"batch_size": 2})
    conversations = [[{"role": "user", "content": "q" * (i % 4 + 1) + str(i)}] for i in range(9)]  # 5 batches

    def ask(ranks, saved):
        return gen.answer(cfg, None, conversations, None, seed=7, label="t", saved=saved, ranks=ranks)

    alone = ask(Ranks(), None)
    assert len(set(alone)) == 9 and all(a.endswith(c[0]["content"]) for a, c in zip(alone, conversations))
    saved = tmp_path / "saved"
    saved.mkdir()
    writers = []
    real_write = gen.write_parquet
    monkeypatch.setattr(gen, "write_parquet", lambda df, path: writers.append(threading.current_thread().name)
                        or real_write(df, path))
    assert _Threads(world).run(lambda ranks: ask(ranks, saved)) == [alone] * world
    assert writers == ["rank-0"] * 5 and len(list(saved.glob("batch-*.parquet"))) == 5

    # a stopped call's saved batches are read by the main process and answered by nobody again
    (saved / "batch-00001.parquet").unlink()
    asked = []
    monkeypatch.setattr(gen, "generate", lambda *a, **k: asked.append(k["seed"]) or _fake_generate(*a, **k))
    assert _Threads(world).run(lambda ranks: ask(ranks, saved)) == [alone] * world
    assert asked == [gen.batch_seed(7, 1)]
