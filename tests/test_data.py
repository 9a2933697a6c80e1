"""HH-RLHF parsing on real rows and every kind of bad input."""

import gzip
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import DataConfig
from paretohqd.data.hh_rlhf import read_pairs
from paretohqd.data.prepare import prepare, sample_id
from paretohqd.data.transcript import split_transcript, to_messages
from paretohqd.io import InputError


def _write(path, lines):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_real_rows_split_and_messages(hh_dir):
    pairs = list(read_pairs([str(hh_dir / "helpful-base.jsonl.gz")]))
    assert len(pairs) == 2354
    assert all(p.source == "helpful-base" for p in pairs)
    first = pairs[0]
    assert first.prompt == "\n\nHuman: Do you know why turkeys became the official food of thanksgiving?"
    assert first.chosen.startswith("To be honest, I don’t know anything about that.")
    assert first.rejected.startswith("I know that the American Indians")
    # multi-turn prompts keep every turn, alternating roles, ending with the user
    multi = next(p for p in pairs if p.prompt.count("\n\nHuman:") >= 3)
    msgs = to_messages(multi.prompt)
    assert len(msgs) >= 5 and msgs[-1]["role"] == "user"
    assert all(a["role"] != b["role"] for a, b in zip(msgs, msgs[1:]))


def test_split_uses_last_assistant_turn():
    prompt, resp = split_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:  d ")
    assert prompt == "\n\nHuman: a\n\nAssistant: b\n\nHuman: c" and resp == "d"
    assert split_transcript("\n\nHuman: a\n\nAssistant:")[1] == ""


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"chosen": "x"', r"bad\.jsonl:2: malformed JSON"),
        ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}', r"bad\.jsonl:2: missing field 'rejected'"),
        ('{"chosen": "\\n\\nHuman: a", "rejected": "\\n\\nHuman: a"}', r"bad\.jsonl:2: field 'chosen': no \"Assistant:\" turn"),
        ('{"chosen": 3, "rejected": "x"}', r"bad\.jsonl:2: field 'chosen' must be a string"),
        ('[1, 2]', r"bad\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, line, match):
    good = json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"})
    path = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(InputError, match=match):
        list(read_pairs([str(path)]))


def test_empty_file_and_missing_path(tmp_path):
    empty = tmp_path / "empty.jsonl.gz"
    _write(empty, [""])
    with pytest.raises(InputError, match="empty.jsonl.gz: empty file"):
        list(read_pairs([str(empty)]))
    with pytest.raises(InputError, match="no such file or folder"):
        list(read_pairs([str(tmp_path / "nope.jsonl")]))
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="holds no .jsonl"):
        list(read_pairs([str(tmp_path / "sub")]))


def test_prepare_counts_dedup_and_filters(tmp_path, smol_tokenizer):
    long = " ".join(["word"] * 600)
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: Hello there, how can I help you today?",
         "rejected": "\n\nHuman: hi\n\nAssistant:"},  # empty rejected
        {"chosen": "\n\nHuman: hi\n\nAssistant: Hello there, how can I help you today?",  # duplicate
         "rejected": "\n\nHuman: hi\n\nAssistant: Go."},  # too short
        {"chosen": f"\n\nHuman: hi\n\nAssistant: {long}",  # too long
         "rejected": "\n\nHuman: hi\n\nAssistant: Sure, here is a longer answer for you to read."},
    ]
    path = _write(tmp_path / "mini.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out" / "hh.parquet"
    df, counts = prepare(DataConfig(sources=[str(path)]), smol_tokenizer, out)
    assert counts == {
        "rows read": 3, "samples seen": 6, "kept": 2,
        "dropped: empty response": 1, "dropped: duplicate": 1,
        "dropped: response < 8 tokens": 1, "dropped: prompt+response > 512 tokens": 1,
    }
    back = pd.read_parquet(out)
    assert list(back.columns) == ["id", "prompt", "messages", "response", "source"]
    assert back["id"].tolist() == [sample_id(p, r) for p, r in zip(back["prompt"], back["response"])]
    assert list(back["messages"][0]) == [{"role": "user", "content": "hi"}]
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_bad_input_leaves_no_output(tmp_path, smol_tokenizer):
    path = _write(tmp_path / "bad.jsonl", ['{"chosen": "x"}'])
    out = tmp_path / "hh.parquet"
    with pytest.raises(InputError):
        prepare(DataConfig(sources=[str(path)]), smol_tokenizer, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_cli_prepare_on_shared_files(tmp_path, hh_dir):
    out = tmp_path / "hh.parquet"
    res = CliRunner().invoke(app, ["data", "prepare", str(hh_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "rows read" in res.output and "4,666" in res.output
    df = pd.read_parquet(out)
    assert set(df["source"]) == {"helpful-base", "harmless-base"}
    assert df["id"].is_unique and 8000 < len(df) < 9332


def test_cli_bad_input_is_one_clear_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", ["not json"])
    res = CliRunner().invoke(app, ["data", "prepare", str(path), "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2
    assert "bad.jsonl:1: malformed JSON" in res.output and "Traceback" not in res.output


def test_label_pairs_know_which_answer_was_chosen_and_keep_only_given_ids(tmp_path):
    from paretohqd.data.pairs import label_pairs

    rows = [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
            {"chosen": "\n\nHuman: Joke?\n\nAssistant: Why not.", "rejected": "\n\nHuman: Joke?\n\nAssistant: No."}]
    with gzip.open(tmp_path / "harmless-base.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    data = DataConfig(sources=[str(tmp_path)])
    hi, joke = "\n\nHuman: Hi", "\n\nHuman: Joke?"
    ids = {sample_id(hi, "Hello there!"), sample_id(hi, "Go away."), sample_id(joke, "Why not.")}  # joke's rejected held out
    pairs = label_pairs(data, ids)
    assert pairs.to_dict("records") == [{"chosen_id": sample_id(hi, "Hello there!"),
                                         "rejected_id": sample_id(hi, "Go away."), "source": "harmless-base"}]


def test_hub_rows_keep_their_subset_so_pair_labels_keep_their_objective(tmp_path, monkeypatch):
    """The hub id is read one data folder at a time (`load_dataset(id, data_dir=SUBSET)`), so a pair's
    source is its subset, not `hh-rlhf`: MODPO's `modpo.subsets` then labels harmlessness pairs as
    harmless. A tmp folder shaped as the hub (SUBSET/SPLIT.jsonl.gz) stands in for it."""
    import datasets

    from paretohqd.data.hh_rlhf import HUB_ID, HUB_SUBSETS
    from paretohqd.data.pairs import label_pairs

    rows = {"helpful-base": ("Boil an egg?", "Eight minutes in boiling water.", "No idea."),
            "harmless-base": ("Pick a lock?", "I can't help with that.", "Use a pin.")}
    for subset, (p, chosen, rejected) in rows.items():
        (tmp_path / subset).mkdir()
        with gzip.open(tmp_path / subset / "train.jsonl.gz", "wt") as f:
            f.write(json.dumps({"chosen": f"\n\nHuman: {p}\n\nAssistant: {chosen}",
                                "rejected": f"\n\nHuman: {p}\n\nAssistant: {rejected}"}) + "\n")
    asked = []

    def load_dataset(name, data_dir=None, split=None):
        asked.append((name, data_dir, split))
        path = tmp_path / data_dir / f"{split}.jsonl.gz"
        return [json.loads(line) for line in gzip.open(path, "rt")] if path.exists() else []

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    pairs = list(read_pairs([HUB_ID], "train"))
    assert asked == [(HUB_ID, subset, "train") for subset in HUB_SUBSETS]
    assert [(p.source, p.chosen) for p in pairs] == [("harmless-base", "I can't help with that."),
                                                     ("helpful-base", "Eight minutes in boiling water.")]
    assert pairs[0].where == f"{HUB_ID}/harmless-base[train]:0"
    ids = {sample_id(f"\n\nHuman: {p}", a) for p, *answers in rows.values() for a in answers}
    labelled = label_pairs(DataConfig(sources=[HUB_ID], hub_split="train"), ids)
    assert labelled["source"].tolist() == ["harmless-base", "helpful-base"]
