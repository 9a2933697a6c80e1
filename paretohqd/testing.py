"""Tiny real models and runs for the tests and benchmarks (`tests/conftest.py`, `benchmarks/chaos.py`,
`bench_fanout.py`, `bench_serve.py`): a random 2-layer Llama with SmolLM2's tokenizer, two random
1-layer BERT reward models and 40 HH rows per subset (real Hugging Face loading and scoring, in no
time), and the overrides of a whole run on them; Llama-2's tokenizer as each way a user gets it
(`llama2_tokenizer`). torch and transformers load only when a model is made.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path


def tiny_llama(folder: Path, tok, *, hidden: int = 32, heads: int = 4) -> Path:
    """A randomly initialised 2-layer Llama (seed 0) with `tok` (SmolLM2's, or Llama-2's), saved in `folder`:
    the policy of the tests and the chaos and serve benchmarks. vLLM's kernels need hidden/heads = 64."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


LLAMA2_WAYS = ("tokenizer.json", "hub folder", "tokenizer.model legacy", "tokenizer.model non-legacy")
"""How a user gets Llama-2's tokenizer (`llama2_tokenizer`): the fast tokenizer's file read as written (the
`tokenizers` library, transformers 4's LlamaTokenizerFast, a serving engine); the hub's folder (that file
with its `tokenizer_config.json`, LlamaTokenizer and `legacy: false`, which transformers 5 rebuilds the
pre-tokenizer from); and `tokenizer.model` alone converted by LlamaTokenizer with `legacy` true or false."""

_HUB_CONFIG = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
               "padding_side": "right", "sp_model_kwargs": {}}
"""meta-llama/Llama-2-7b-hf's tokenizer_config.json, less its tokenizer class and `legacy`."""


def llama2_model_file() -> Path:
    """Llama 2's SentencePiece model in the shared folder (`../shared/tokenizers/llama-2`, see its NOTICE)."""
    from paretohqd.config import SHARED_DIR

    return SHARED_DIR / "tokenizers" / "llama-2" / "tokenizer.model"


def llama2_tokenizer(folder: Path, way: str) -> Path:
    """A tokenizer folder holding Llama-2's tokenizer the way `way` (one of `LLAMA2_WAYS`) gives it,
    for `paretohqd.policy.load.load_tokenizer`.

    The `tokenizer.json` is converted from `tokenizer.model` as the hub's was (transformers 4's
    LlamaConverter, legacy): BPE with byte fallback, the normalizer that prepends "▁" and writes
    spaces as "▁", no pre-tokenizer, BOS added by the post-processor. It then encodes exactly as
    SentencePiece does (tests/test_llama2_tokenizer.py checks that on HH transcripts).
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    config = dict(_HUB_CONFIG)
    if way.startswith("tokenizer.model"):
        shutil.copy(llama2_model_file(), folder / "tokenizer.model")
        config.update(tokenizer_class="LlamaTokenizer", legacy=way.endswith(" legacy"))
    else:
        _hub_tokenizer_json(folder / "tokenizer.json")
        if way == "hub folder":
            shutil.copy(llama2_model_file(), folder / "tokenizer.model")
            config.update(tokenizer_class="LlamaTokenizer", legacy=False)
        else:  # read as written: no class that would rebuild the file's pipeline
            del config["add_bos_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def _hub_tokenizer_json(dest: Path) -> None:
    """`tokenizer.model` converted into the hub's `tokenizer.json` (see `llama2_tokenizer`)."""
    import shutil
    import tempfile

    from tokenizers import decoders, normalizers, processors
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        # with no tokenizer class, transformers converts the model file piece by piece, merges ranked by
        # piece score (SentencePiece's own order); only the pipeline around the BPE model differs from the hub's
        shutil.copy(llama2_model_file(), Path(tmp) / "tokenizer.model")
        tok = AutoTokenizer.from_pretrained(tmp).backend_tokenizer
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(dest))


def tiny_assets(folder: Path) -> dict[str, str]:
    """The tiny policy, two tiny reward models and 40 HH rows per subset, made once in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "assets.json"
    if done.exists():
        return json.loads(done.read_text())
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from paretohqd.config import SHARED_DIR
    from paretohqd.policy.load import OFFLINE_SMOLLM2, load_tokenizer
    from paretohqd.rewards.minilm import encoder_path

    tok = load_tokenizer(OFFLINE_SMOLLM2)
    tiny_llama(folder / "policy", tok)
    rm_tok = AutoTokenizer.from_pretrained(encoder_path())
    for seed, objective in enumerate(("helpful", "harmless")):
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=rm_tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, num_labels=1, max_position_embeddings=512)
        BertForSequenceClassification(cfg).save_pretrained(folder / f"rm-{objective}")
        rm_tok.save_pretrained(folder / f"rm-{objective}")
    (folder / "hh").mkdir(exist_ok=True)
    for subset in ("helpful-base", "harmless-base"):
        src = SHARED_DIR / "data" / "hh-rlhf" / f"{subset}.jsonl.gz"
        with gzip.open(src, "rt") as f, gzip.open(folder / "hh" / f"{subset}.jsonl.gz", "wt") as g:
            g.writelines(itertools.islice(f, 40))
    out = {"policy": str(folder / "policy"), "helpful": str(folder / "rm-helpful"),
           "harmless": str(folder / "rm-harmless"), "data": str(folder / "hh")}
    done.write_text(json.dumps(out))
    return out


def tiny_run_overrides(assets: dict[str, str], runs: Path, rewards: Path, name: str) -> list[str]:
    """A whole tiny run, both stages and evaluation, sized for tests: 2 preferences (2 stage-2
    representatives), 4 stage-1 steps with a checkpoint every 2, 4 stage-2 prompts answered 2 at a
    time (2 saved batches per pool), 2 evaluation prompts."""
    return [f"name={name}", f"runs_dir={runs}", f"data.sources=[{assets['data']}]", f"policy.model={assets['policy']}",
            f"rewards.models={{helpful: {assets['helpful']}, harmless: {assets['harmless']}}}", f"rewards.dir={rewards}",
            "rewards.dtype=float32", "select.preferences=2", "select.k=4", "train.steps=4", "train.save_every=2",
            "train.batch_size=2", "train.warmup_steps=0", "train.lr=1e-2", "stage2.prompts=4", "stage2.steps=2",
            "generate.max_new_tokens=6", "generate.batch_size=2", "evaluate.prompts=2", "evaluate.bootstrap=20",
            "evaluate.html=false"]
