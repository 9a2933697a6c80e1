"""Data sources with a format: generic tables and pairs, and the published schemas of PKU-SafeRLHF,
HelpSteer2 and UltraFeedback.

The real dataset files are not reachable from the test machine (no hub access), so each reader is
tested on a few rows written here in the dataset's published schema (as its dataset card gives it),
including every kind of bad row the reader reports.
"""

import json

import pandas as pd
import pytest

from paretohqd.config import ConfigError, DataConfig, SourceConfig, load_config
from paretohqd.data.prepare import label_frame, prepare
from paretohqd.data.sources import as_source, describe, hh_paths, read_rows
from paretohqd.io import InputError

HI = "Hello there, this is a long enough answer for the filters."


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _samples(source, hub_split="test"):
    return [s for row in read_rows([source], hub_split) for s in row]


# Config --------------------------------------------------------------------------------------------


def test_sources_take_paths_and_mappings():
    cfg = load_config(None, ["data.sources=[a, {path: t.parquet, format: table, columns: {prompt: q}}]"])
    plain, mapped = cfg.data.sources
    assert plain == "a" and as_source(plain).format == "hh"
    assert mapped == SourceConfig(path="t.parquet", format="table", columns={"prompt": "q"})
    assert str(mapped) == "t.parquet (table)"


@pytest.mark.parametrize("value, match", [
    ("[{path: x, format: parquet}]", r"data\.sources\.0\.format: Input should be 'hh', 'table'"),
    ("[{path: x, format: helpsteer2, columns: {prompt: q}}]", r"data\.sources\.0: .*only the table and pairs formats"),
    ("[{format: table}]", r"data\.sources\.0\.path: Field required"),
    ("[{path: x, format: table, columns: {prompt: ''}}]", r"columns: empty name"),
])
def test_bad_source_mappings_are_named_by_key(value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"data.sources={value}"])


# table ---------------------------------------------------------------------------------------------


def test_table_parquet_keeps_labels_and_maps_columns(tmp_path):
    df = pd.DataFrame({"question": ["What is a llama?", "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant:"],
                       "answer": [HI, "Why did the llama cross the road? " + HI],
                       "helpfulness": [3.5, 1.0], "id": [7, 8], "flag": [True, False]})
    df.to_parquet(tmp_path / "mine.parquet")
    src = SourceConfig(path=str(tmp_path / "mine.parquet"), format="table",
                       columns={"prompt": "question", "response": "answer"})
    first, second = _samples(src)
    assert first.prompt == "\n\nHuman: What is a llama?" and first.response == HI and first.source == "mine"
    assert first.messages == [{"role": "user", "content": "What is a llama?"}]
    # the file's own id is kept as file_id; the consumed columns are not labels
    assert first.labels == {"helpfulness": 3.5, "file_id": 7, "flag": True}
    # an HH transcript prompt keeps its turns (its trailing "Assistant:" cut)
    assert second.prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?"
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]


def test_table_jsonl_messages_and_csv(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
             "response": HI, "score": 2}]
    (s,) = _samples(SourceConfig(path=str(_jsonl(tmp_path / "m.jsonl", rows)), format="table"))
    # the system turn is folded into the user turn: the HH text and the messages say the same
    assert s.messages == [{"role": "user", "content": "Be kind.\n\nHi"}]
    assert s.prompt == "\n\nHuman: Be kind.\n\nHi" and s.labels == {"score": 2}
    pd.DataFrame({"prompt": ["Hi", "Yo"], "response": [HI, HI], "score": [1, None]}).to_csv(tmp_path / "t.csv", index=False)
    a, b = _samples(SourceConfig(path=str(tmp_path / "t.csv"), format="table"))
    assert a.labels == {"score": 1.0} and b.labels == {"score": None}


def test_folder_split_filter(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "d" / split).mkdir(parents=True)
        pd.DataFrame({"prompt": [split], "response": [HI]}).to_parquet(tmp_path / "d" / split / "part-0.parquet")
    folder = str(tmp_path / "d")
    assert [s.prompt for s in _samples(SourceConfig(path=folder, format="table"))] == ["\n\nHuman: test", "\n\nHuman: train"]
    assert [s.prompt for s in _samples(SourceConfig(path=folder, format="table", split="train"))] == ["\n\nHuman: train"]
    with pytest.raises(InputError, match="holds no 'validation' split table files"):
        _samples(SourceConfig(path=folder, format="table", split="validation"))


@pytest.mark.parametrize("row, match", [
    ({"prompt": "Hi"}, r"t\.jsonl:2: missing field 'response'; name the file's column with columns: \{response: COLUMN\}"),
    ({"prompt": "Hi", "response": 3}, r"t\.jsonl:2: field 'response' must be text, got int"),
    ({"response": HI}, r"t\.jsonl:2: missing field 'prompt' \(name the file's column"),
    ({"prompt": "  ", "response": HI}, r"t\.jsonl:2: field 'prompt' is empty"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "response": HI},
     r"t\.jsonl:2: field 'messages' does not end with a user turn"),
    ({"messages": [{"role": "robot", "content": "Hi"}], "response": HI}, r"t\.jsonl:2: field 'messages' holds .* not a message"),
    ({"messages": "Hi", "response": HI}, r"t\.jsonl:2: field 'messages' is not a non-empty list"),
    ('{"prompt": "Hi",', r"t\.jsonl:2: malformed JSON"),
    ("[1, 2]", r"t\.jsonl:2: expected a JSON object, got list"),
])
def test_table_bad_rows_name_file_line_field(tmp_path, row, match):
    path = _jsonl(tmp_path / "t.jsonl", [{"prompt": "ok", "response": HI}, row])
    with pytest.raises(InputError, match=match):
        _samples(SourceConfig(path=str(path), format="table"))


def test_table_mapped_column_missing_names_the_file_column(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"prompt": "Hi", "text": HI}, {"prompt": "Hi"}])
    with pytest.raises(InputError, match=r"t\.jsonl:2: missing field 'response' \(the file's column 'text', mapped"):
        _samples(SourceConfig(path=str(path), format="table", columns={"response": "text"}))


def test_unreadable_sources(tmp_path):
    (tmp_path / "e.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"e\.parquet: cannot read"):
        _samples(SourceConfig(path=str(tmp_path / "e.parquet"), format="table"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unknown table format"):
        _samples(SourceConfig(path=str(tmp_path / "x.txt"), format="table"))
    _jsonl(tmp_path / "empty.jsonl", [""])
    with pytest.raises(InputError, match=r"empty\.jsonl: empty file \(no rows\)"):
        _samples(SourceConfig(path=str(tmp_path / "empty.jsonl"), format="table"))
    with pytest.raises(InputError, match="no such file or folder"):
        _samples(SourceConfig(path=str(tmp_path / "nope.parquet"), format="table"))


def test_hub_source_reads_the_split(monkeypatch):
    import datasets

    asked = []

    def fake_load(repo, split):
        asked.append((repo, split))
        return [{"prompt": "Hi", "response": HI, "helpfulness": 4, "correctness": 3, "coherence": 4, "complexity": 1,
                 "verbosity": 2}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (s,) = _samples(SourceConfig(path="nvidia/HelpSteer2", format="helpsteer2"), hub_split="train")
    assert asked == [("nvidia/HelpSteer2", "train")] and s.source == "nvidia/HelpSteer2" and s.labels["helpfulness"] == 4
    _samples(SourceConfig(path="nvidia/HelpSteer2", format="helpsteer2", split="validation"))
    assert asked[-1] == ("nvidia/HelpSteer2", "validation")


# pairs ---------------------------------------------------------------------------------------------


def test_pairs_two_samples_with_pair_labels(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": HI, "rejected": "Go away, " + HI, "topic": "x"}])
    chosen, rejected = _samples(SourceConfig(path=str(path), format="pairs"))
    assert (chosen.response, rejected.response) == (HI, "Go away, " + HI)
    assert chosen.labels == {"topic": "x", "pair_id": f"{path}:1", "response_id": 0, "chosen": 1.0, "chosen_id": 0}
    assert rejected.labels["response_id"] == 1 and rejected.labels["chosen"] == 0.0


def test_pairs_bad_row(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": HI}])
    with pytest.raises(InputError, match=r"p\.jsonl:1: missing field 'rejected'"):
        _samples(SourceConfig(path=str(path), format="pairs"))


# PKU-SafeRLHF --------------------------------------------------------------------------------------

PKU_ROW = {"prompt": "How do I pick a lock?", "response_0": "I can't help with that. " + HI,
           "response_1": "First, get a tension wrench. " + HI, "prompt_source": "Alpaca3-8B",
           "response_0_source": "Alpaca3-8B", "response_1_source": "Alpaca3-8B",
           "is_response_0_safe": True, "is_response_1_safe": False,
           "response_0_harm_category": {"Violence": False}, "response_1_harm_category": {"Violence": False},
           "response_0_severity_level": 0, "response_1_severity_level": 2,
           "better_response_id": 1, "safer_response_id": 0}


def test_pku_saferlhf_reader(tmp_path):
    (tmp_path / "Alpaca3-8B").mkdir()  # the 2024 release's layout: data/<model>/{train,test}.jsonl
    path = _jsonl(tmp_path / "Alpaca3-8B" / "train.jsonl", [PKU_ROW])
    _jsonl(tmp_path / "Alpaca3-8B" / "test.jsonl", [{**PKU_ROW, "prompt": "not read"}])
    a, b = _samples(SourceConfig(path=str(tmp_path), format="pku-saferlhf", split="train"))
    assert a.prompt == "\n\nHuman: How do I pick a lock?" and a.source == "Alpaca3-8B"
    assert a.labels == {"better": 0.0, "safer": 1.0, "is_safe": 1.0, "better_response_id": 1, "safer_response_id": 0,
                        "pair_id": f"{path}:1", "response_id": 0, "severity_level": 0,
                        "response_source": "Alpaca3-8B", "prompt_source": "Alpaca3-8B"}
    assert (b.labels["better"], b.labels["safer"], b.labels["is_safe"], b.labels["severity_level"]) == (1.0, 0.0, 0.0, 2)
    # the first release has no severity or sources: the labels it has are still read
    old = {k: v for k, v in PKU_ROW.items() if "source" not in k and "severity" not in k and "harm" not in k}
    (c, _) = _samples(SourceConfig(path=str(_jsonl(tmp_path / "v0.jsonl", [old])), format="pku-saferlhf"))
    assert "severity_level" not in c.labels and c.labels["is_safe"] == 1.0


@pytest.mark.parametrize("change, match", [
    ({"better_response_id": 2}, r"field 'better_response_id' must lie in \[0, 1\], got 2"),
    ({"safer_response_id": None}, r"missing field 'safer_response_id'"),
    ({"is_response_1_safe": "yes"}, r"field 'is_response_1_safe' must be true/false, got 'yes'"),
    ({"is_response_0_safe": None}, r"missing field 'is_response_0_safe'"),
    ({"response_1": None}, r"missing field 'response_1'"),
    ({"prompt": 5}, r"field 'prompt' must be text, got int"),
])
def test_pku_saferlhf_bad_rows(tmp_path, change, match):
    path = _jsonl(tmp_path / "pku.jsonl", [PKU_ROW, {**PKU_ROW, **change}])
    with pytest.raises(InputError, match=r"pku\.jsonl:2: " + match):
        _samples(SourceConfig(path=str(path), format="pku-saferlhf"))


# HelpSteer2 ----------------------------------------------------------------------------------------

HS2_ROW = {"prompt": "c#", "response": "C# is a high-level language. " + HI, "helpfulness": 3, "correctness": 4,
           "coherence": 4, "complexity": 2, "verbosity": 1}


def test_helpsteer2_reader_and_multi_turn_prompts(tmp_path):
    multi = {**HS2_ROW, "prompt": "Hi\n<extra_id_1>Assistant\nHello! How can I help?\n<extra_id_1>User\nWhat is c#?"}
    path = tmp_path / "train.jsonl.gz"
    import gzip

    with gzip.open(path, "wt") as f:
        f.write(json.dumps(HS2_ROW) + "\n" + json.dumps(multi) + "\n")
    one, two = _samples(SourceConfig(path=str(path), format="helpsteer2"))
    assert one.prompt == "\n\nHuman: c#" and one.labels == {k: HS2_ROW[k] for k in
                                                           ("helpfulness", "correctness", "coherence", "complexity", "verbosity")}
    assert two.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                            {"role": "user", "content": "What is c#?"}]
    assert two.prompt == "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: What is c#?"


@pytest.mark.parametrize("change, match", [
    ({"helpfulness": 5}, r"field 'helpfulness' must lie in \[0, 4\], got 5"),
    ({"verbosity": 2.5}, r"field 'verbosity' must be an integer, got 2.5"),
    ({"coherence": "high"}, r"field 'coherence' must be an integer, got 'high'"),
    ({"correctness": None}, r"missing field 'correctness'"),
    ({"prompt": "Hi\n<extra_id_1>Assistant\nHello"}, r"field 'prompt': the turns .* must start and end with a user turn"),
    ({"response": ["a"]}, r"field 'response' must be text, got list"),
])
def test_helpsteer2_bad_rows(tmp_path, change, match):
    path = _jsonl(tmp_path / "hs.jsonl", [HS2_ROW, {**HS2_ROW, **change}])
    with pytest.raises(InputError, match=r"hs\.jsonl:2: " + match):
        _samples(SourceConfig(path=str(path), format="helpsteer2"))


# UltraFeedback -------------------------------------------------------------------------------------


def _completion(response, ratings, overall=7.5):
    aspects = ("instruction_following", "honesty", "truthfulness", "helpfulness")
    return {"model": "gpt-4", "principle": "helpfulness", "custom_system_prompt": "", "response": response,
            "annotations": {a: {"Rating": r, "Rationale": "..."} for a, r in zip(aspects, ratings)},
            "critique": "...", "overall_score": overall, "fine-grained_score": 4.25}


UF_ROW = {"source": "evol_instruct", "instruction": "Name a llama fact.", "models": ["gpt-4", "alpaca-7b"],
          "completions": [_completion("Llamas hum. " + HI, ["5", "4", "N/A", "4"]),
                          _completion("Llamas fly. " + HI, ["2", "3", "1", "2"], overall=3.0)],
          "correct_answers": ["None"], "incorrect_answers": ["None"]}


def test_ultrafeedback_reader(tmp_path):
    pd.DataFrame([UF_ROW]).to_parquet(tmp_path / "uf.parquet")  # nested rows, as the hub's Parquet
    a, b = _samples(SourceConfig(path=str(tmp_path / "uf.parquet"), format="ultrafeedback"))
    assert a.prompt == "\n\nHuman: Name a llama fact." and a.response == "Llamas hum. " + HI
    assert a.labels == {"instruction_following": 5.0, "honesty": 4.0, "truthfulness": None, "helpfulness": 4.0,
                        "overall_score": 7.5, "fine_grained_score": 4.25, "model": "gpt-4", "subset": "evol_instruct",
                        "pair_id": f"{tmp_path / 'uf.parquet'}:row 1", "response_id": 0}
    assert b.labels["truthfulness"] == 1.0 and b.labels["response_id"] == 1


@pytest.mark.parametrize("change, match", [
    ({"completions": "none"}, r"uf\.jsonl:2: field 'completions' must be a list of completions, got str"),
    ({"completions": [_completion(HI, ["7", "4", "4", "4"])]},
     r"uf\.jsonl:2: completions\[0\]\.annotations\.instruction_following\.Rating: expected 1-5 or \"N/A\", got '7'"),
    ({"completions": [{**_completion(HI, ["5"] * 4), "response": None}]}, r"uf\.jsonl:2: completions\[0\]: missing field 'response'"),
    ({"completions": [{"response": HI}]}, r"uf\.jsonl:2: completions\[0\]: missing field 'annotations'"),
    ({"completions": ["Llamas hum."]}, r"uf\.jsonl:2: completions\[0\]: expected an object with response and annotations"),
    ({"completions": [{**_completion(HI, ["5"] * 4), "overall_score": "high"}]},
     r"uf\.jsonl:2: completions\[0\]: field 'overall_score' must be a number, got 'high'"),
    ({"instruction": None}, r"uf\.jsonl:2: missing field 'instruction'"),
])
def test_ultrafeedback_bad_rows(tmp_path, change, match):
    path = _jsonl(tmp_path / "uf.jsonl", [UF_ROW, {**UF_ROW, **change}])
    with pytest.raises(InputError, match=match):
        _samples(SourceConfig(path=str(path), format="ultrafeedback"))


# prepare -------------------------------------------------------------------------------------------


def test_prepare_keeps_labels_and_counts_missing_ones(tmp_path, smol_tokenizer, small_hh):
    uf = tmp_path / "uf.jsonl"
    _jsonl(uf, [UF_ROW])
    cfg = DataConfig(sources=[str(small_hh / "helpful-base.jsonl.gz"), {"path": str(uf), "format": "ultrafeedback"}])
    df, counts = prepare(cfg, smol_tokenizer, tmp_path / "all.parquet")
    back = pd.read_parquet(tmp_path / "all.parquet")
    assert list(back.columns[:5]) == ["id", "prompt", "messages", "response", "source"]
    assert "truthfulness" in back.columns and back["id"].is_unique
    labelled = back[back["source"] == "uf"].set_index("response")
    assert labelled["truthfulness"].isna().to_dict() == {"Llamas hum. " + HI: True, "Llamas fly. " + HI: False}
    assert labelled["helpfulness"].to_dict() == {"Llamas hum. " + HI: 4.0, "Llamas fly. " + HI: 2.0}
    hh = int((back["source"] != "uf").sum())
    assert back.loc[back["source"] != "uf", "helpfulness"].isna().all()
    # the HH samples have no labels; the UltraFeedback answer rated N/A lacks its truthfulness
    assert counts["kept without label 'truthfulness'"] == hh + 1 and counts["kept without label 'honesty'"] == hh
    assert counts["rows read"] == 40 + 1 and counts["kept"] == len(back)


def test_label_frame_one_type_per_column():
    frame = label_frame([{"a": True, "b": "x", "c": 1}, {"a": 2, "b": 3}, {"c": None}])
    assert frame["a"].tolist()[:2] == [1.0, 2.0] and frame["a"].isna().tolist() == [False, False, True]
    assert frame["b"].tolist() == ["x", "3", None]
    assert frame["c"].tolist()[0] == 1 and frame["c"].isna().tolist() == [False, True, True]


def test_hh_paths_and_describe(tmp_path):
    assert hh_paths(["a", SourceConfig(path="b", format="table")]) == ["a"]
    assert hh_paths([SourceConfig(path="b", format="table")]) == [str(s) for s in DataConfig().sources]
    d = describe(SourceConfig(path=str(tmp_path / "x.parquet"), format="table", columns={"b": "y", "a": "z"}), "test")
    assert d == {"path": str((tmp_path / "x.parquet").resolve()), "format": "table", "columns": {"a": "z", "b": "y"},
                 "split": None}
    assert describe(SourceConfig(path="nvidia/HelpSteer2", format="helpsteer2"), "train")["split"] == "train"


def test_no_sources_and_no_samples(tmp_path):
    from paretohqd.data.sources import first_sample

    with pytest.raises(InputError, match=r"no data sources given \(data.sources\)"):
        list(read_rows([]))
    path = _jsonl(tmp_path / "uf.jsonl", [{**UF_ROW, "completions": []}])
    with pytest.raises(InputError, match=r"uf\.jsonl: no samples in it"):
        first_sample(SourceConfig(path=str(path), format="ultrafeedback"))
