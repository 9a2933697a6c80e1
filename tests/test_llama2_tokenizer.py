"""The `hh` prompt format on the paper's base model's tokenizer (Llama-2's SentencePiece, 32,000 pieces),
each way a user gets it (`paretohqd.testing.LLAMA2_WAYS`): what SFT trains on is what generation
prompts with and what the model would write, BOS once, `</s>` after every target, and generation
stopping at EOS and at the next human turn.

Why it can go wrong: SentencePiece writes a space as "▁" and puts one before the text, so
`" " + answer` encoded alone starts with a lone "▁" (id 29871) that the whole transcript
`...Assistant: answer` does not have (there the space belongs to the answer's first piece).
The ways disagree on that: the hub's `tokenizer.json` read as written keeps the lone "▁",
transformers 5's LlamaTokenizer (either `legacy`) does not.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted import ScriptedModel

from paretohqd.config import GenerateConfig
from paretohqd.policy.batches import encode
from paretohqd.policy.generate import generate
from paretohqd.policy.load import load_tokenizer
from paretohqd.policy.prompts import HH_STOP, cut_at_stop, hh_text, prompt_ids
from paretohqd.testing import LLAMA2_WAYS, llama2_model_file, llama2_tokenizer

MODEL_FILE = llama2_model_file()
pytestmark = pytest.mark.skipif(not MODEL_FILE.exists(), reason=f"{MODEL_FILE} missing (Llama 2's tokenizer, "
                                                                 "in the shared folder beside the repository)")
BOS, EOS, LONE_SPACE = 1, 2, 29871


@pytest.fixture(scope="module", params=LLAMA2_WAYS)
def llama2(request, tmp_path_factory):
    """Llama-2's tokenizer one way, loaded as a run loads its policy's (`load_tokenizer`)."""
    folder = tmp_path_factory.mktemp("llama2-" + request.param.replace(" ", "-").replace(".", "-"))
    return load_tokenizer(str(llama2_tokenizer(folder, request.param)))


def _whole(tokenizer, messages, response):
    """The whole transcript's ids: the text a model reads when it has written `response` itself."""
    return tokenizer(f"{hh_text(messages)} {response}")["input_ids"]


def test_the_ways_disagree_on_a_lone_space_and_agree_on_bos_and_eos(llama2, request):
    way = request.node.callspec.params["llama2"]
    # as written the file prepends "▁" to " Hello" ("▁▁Hello"); LlamaTokenizer's Metaspace does not
    assert llama2(" Hello")["input_ids"] == ([BOS, LONE_SPACE, 15043] if way == "tokenizer.json" else [BOS, 15043])
    assert (llama2.bos_token_id, llama2.eos_token_id, len(llama2)) == (BOS, EOS, 32000)


def test_the_converted_tokenizer_json_encodes_as_sentencepiece(tmp_path, hh_samples):
    """The `tokenizer.json` built here encodes HH transcripts exactly as SentencePiece does (as the
    hub's, converted by transformers 4, does), lone spaces included."""
    import sentencepiece

    tok = load_tokenizer(str(llama2_tokenizer(tmp_path, "tokenizer.json")))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(MODEL_FILE))
    texts = [f"{hh_text(m)} {r}" for m, r in hh_samples] + [" Hello", "  two  spaces", "x\n\n 42 ünï ☃"]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
    assert sp.encode(" Hello") == [LONE_SPACE, 15043]


def _check_sample(tokenizer, messages, response, max_length=4096):
    ids, n_prompt = encode(tokenizer, messages, response, max_length, "hh")
    assert ids[:n_prompt] == prompt_ids(tokenizer, messages, "hh")  # what generation is prompted with
    assert ids[:-1] == _whole(tokenizer, messages, response)  # the answer: the whole transcript's tokens
    assert ids[0] == BOS and ids.count(BOS) == 1
    assert ids[-1] == EOS and EOS not in ids[:-1]
    # the targets, decoded as generation decodes its answers, are the response
    assert cut_at_stop(tokenizer.decode(ids[n_prompt:], skip_special_tokens=True), [HH_STOP]) == response


def test_training_encoding_is_the_whole_transcript_with_bos_once_and_eos(llama2, hh_samples):
    for messages, response in hh_samples:
        _check_sample(llama2, messages, response)


def _plain(text: str) -> bool:
    """Non-empty text that decodes back to itself: no "▁" of its own (SentencePiece decodes that as a
    space) and no special token's text (`</s>` in a row is read as EOS; see docs/data.md)."""
    return bool(text) and "▁" not in text and not any(t in text for t in ("<s>", "</s>", "<unk>"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(response=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]) | st.sampled_from("\n "),
                        min_size=1, max_size=30).map(str.strip).filter(_plain),
       question=st.sampled_from(["Hi", "What is 2 + 2?", "Tell me a joke.\n\nPlease", "ünï ☃ 42"]))
def test_any_answer_is_encoded_as_the_whole_transcript(llama2, response, question):
    """Any stripped answer that decodes back to itself (`_plain`)."""
    _check_sample(llama2, [{"role": "user", "content": question}], response)


def test_a_cut_prompt_keeps_its_bos(llama2):
    """Prompts over `max_length` lose their oldest tokens, never the BOS Llama-2 always saw first."""
    messages = [{"role": "user", "content": "word " * 300}]
    ids, n_prompt = encode(llama2, messages, "Short answer here.", 32, "hh")
    assert len(ids) == 32 and ids[0] == BOS and ids.count(BOS) == 1 and ids[-1] == EOS
    assert ids[n_prompt:-1] == _whole(llama2, messages, "Short answer here.")[-(len(ids) - n_prompt - 1):]


def test_smollm2_hh_answers_are_encoded_as_before(smol_tokenizer, hh_samples):
    """SmolLM2's byte-level BPE splits at the space before the answer: the whole transcript's answer
    tokens are `" " + answer` encoded alone, as `encode` used to take them, and no BOS is added."""
    for messages, response in hh_samples:
        ids, n_prompt = encode(smol_tokenizer, messages, response, 4096, "hh")
        assert ids[:n_prompt] == smol_tokenizer(hh_text(messages))["input_ids"]
        assert ids[n_prompt:] == smol_tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [
            smol_tokenizer.eos_token_id]


CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a fruit."}]


def _continuation(tokenizer, text):
    """The ids a model writes to continue the prompt with `text` (the whole transcript's, past the prompt)."""
    prompt = prompt_ids(tokenizer, CONVERSATION, "hh")
    whole = tokenizer(hh_text(CONVERSATION) + text)["input_ids"]
    assert whole[:len(prompt)] == prompt
    return whole[len(prompt):]


def test_generation_stops_at_the_next_human_turn_and_cuts_it(llama2):
    tail = _continuation(llama2, " An apple, 2 pears.\n\nHuman: And another?\n\nAssistant: A plum.")
    model = ScriptedModel(llama2, tail)
    answers, _ = generate(model, llama2, [CONVERSATION], GenerateConfig(max_new_tokens=40), seed=0, fmt="hh")
    assert answers == ["An apple, 2 pears."]
    # the row ended at the token that completed "\n\nHuman:", not at EOS or max_new_tokens
    first = next(k for k in range(1, len(tail) + 1) if HH_STOP in llama2.decode(tail[:k]))
    assert model.steps == first - 1 < len(tail) - 1
    assert model.prompts == [prompt_ids(llama2, CONVERSATION, "hh")] and model.prompts[0].count(BOS) == 1


def test_generation_stops_at_eos(llama2):
    tail = _continuation(llama2, " An apple.")
    model = ScriptedModel(llama2, tail)  # then EOS, then EOS again for ever
    answers, _ = generate(model, llama2, [CONVERSATION], GenerateConfig(max_new_tokens=40), seed=0, fmt="hh")
    assert answers == ["An apple."] and model.steps == len(tail)  # EOS was the last token

