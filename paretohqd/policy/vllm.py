"""Sampling with vLLM (`generate.backend: vllm`): one offline engine per process on the base policy,
LoRA enabled, and one `LoRARequest` per preference model, so models are switched without reloading
the base weights.

vLLM takes one adapter per request, so a mix of trained models (theta = W + sum_i lambda_i dW_i,
`paretohqd.use`) is first written as one adapter, PEFT's `cat` combination as `load_mixed` does; its rank
is the sum of the parts' ranks. Fully fine-tuned models (train.lora: false) are refused: they have no
adapter to request. vLLM is an optional extra (`pip install 'paretohqd[vllm]'`) and needs CUDA.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
from pathlib import Path

from paretohqd.config import ConfigError, GenerateConfig, PolicyConfig, cache_dir
from paretohqd.devices import native_bf16
from paretohqd.policy.load import resolve_policy, write_weighted_adapters

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM's max_lora_rank accepts (vllm.config.lora.MaxLoRARanks)."""


def check_backend(generate: GenerateConfig, *, lora: bool, cuda: bool | None = None) -> list[str]:
    """What stops `generate.backend` from running here, one line each (none for `hf`).

    Args:
        lora: train.lora (vLLM serves the trained models as LoRA adapters).
        cuda: whether a CUDA device is present; default: ask torch.

    Examples:
        >>> check_backend(GenerateConfig(), lora=False)
        []
        >>> check_backend(GenerateConfig(backend="vllm"), lora=False, cuda=True)[0]
        'generate.backend: vllm serves the trained models as LoRA adapters, but train.lora is false; set generate.backend: hf'
    """
    if generate.backend != "vllm":
        return []
    problems = []
    if not lora:
        problems.append("generate.backend: vllm serves the trained models as LoRA adapters, but train.lora is false; "
                        "set generate.backend: hf")
    if importlib.util.find_spec("vllm") is None:
        problems.append("generate.backend: vllm, but vllm is not installed; pip install 'paretohqd[vllm]' "
                        "(needs a CUDA GPU) or set generate.backend: hf")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        problems.append("generate.backend: vllm needs a CUDA GPU and torch sees none; set generate.backend: hf")
    return problems


def max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`.

    Examples:
        >>> max_lora_rank(16), max_lora_rank(24), max_lora_rank(48)
        (16, 32, 64)
    """
    return next((v for v in VLLM_RANKS if v >= rank), rank)


def lora_rank(folder: Path) -> int:
    """The largest LoRA rank in an adapter folder (r, or its per-module rank_pattern)."""
    conf = json.loads((Path(folder) / "adapter_config.json").read_text())
    return max([int(conf["r"]), *[int(v) for v in (conf.get("rank_pattern") or {}).values()]])


def sampling_kwargs(cfg: GenerateConfig, *, seed: int, stops: list[str], eos: list[int]) -> dict:
    """`vllm.SamplingParams` arguments for one request, from the run's generation settings: as
    the `hf` backend's decoding loop (greedy at temperature 0, top_k 0 = off, stops cut).

    Examples:
        >>> kw = sampling_kwargs(GenerateConfig(max_new_tokens=8), seed=3, stops=["END"], eos=[2])
        >>> kw["max_tokens"], kw["top_k"], kw["top_p"], kw["stop"], kw["stop_token_ids"], kw["seed"]
        (8, -1, 0.9, ['END'], [2], 3)
        >>> sampling_kwargs(GenerateConfig(temperature=0), seed=0, stops=[], eos=[])["temperature"]
        0.0
    """
    return {"max_tokens": cfg.max_new_tokens, "temperature": float(cfg.temperature), "top_p": float(cfg.top_p),
            "top_k": cfg.top_k if cfg.top_k > 0 else -1,  # vLLM's "off" is -1 (0 is refused by older versions)
            "stop": list(stops) or None, "stop_token_ids": list(eos), "seed": seed,
            "include_stop_str_in_output": False, "skip_special_tokens": True}


def mixed_adapter(policy: PolicyConfig, parts: list[tuple[Path, float]]) -> Path:
    """One adapter folder whose weight change is sum_i lambda_i dW_i of the parts (PEFT `cat`, as
    `load_mixed`), written once under the cache (named by the parts' folders and lambdas)."""
    key = json.dumps([policy.model, [(str(Path(f).resolve()), float(lam)) for f, lam in parts]])
    dest = cache_dir() / "mixed-adapters" / hashlib.sha256(key.encode()).hexdigest()[:20]
    if (dest / "adapter_config.json").exists():
        return dest
    write_weighted_adapters(policy, [Path(f) for f, _ in parts], [[float(lam) for _, lam in parts]], [dest])
    return dest


class Engine:
    """vLLM's offline `LLM` on the base policy with LoRA enabled, and a `LoRARequest` per adapter folder."""

    def __init__(self, policy: PolicyConfig, cfg: GenerateConfig, rank: int):
        from vllm import LLM

        self.settings, self.rank = _engine_settings(policy, cfg), max_lora_rank(rank)
        path = resolve_policy(policy.model)
        self.llm = LLM(model=path, tokenizer=path, dtype=self.settings[1], trust_remote_code=policy.trust_remote_code,
                       enable_lora=True, max_lora_rank=self.rank, max_loras=1, gpu_memory_utilization=cfg.vllm_gpu_memory)
        self.requests: dict[str, object] = {}

    def request(self, adapter: Path | None):
        """The `LoRARequest` of an adapter folder (None: the base model, no request)."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = str(Path(adapter).resolve())
        if path not in self.requests:  # ids are 1, 2, ... in the order adapters are first asked for
            self.requests[path] = LoRARequest(f"model-{len(self.requests) + 1}", len(self.requests) + 1, path)
        return self.requests[path]

    def generate(self, prompt_ids: list[list[int]], adapter: Path | None, params: list[dict]) -> list[list[int]]:
        """Each prompt's new token ids, in input order; `params[i]`: request i's `sampling_kwargs`."""
        from vllm import SamplingParams

        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                                    [SamplingParams(**p) for p in params], lora_request=self.request(adapter),
                                    use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]


def _engine_settings(policy: PolicyConfig, cfg: GenerateConfig) -> tuple:
    dtype = cfg.dtype if cfg.dtype != "auto" else "bfloat16" if native_bf16("cuda") else policy.dtype
    return policy.model, dtype, policy.trust_remote_code, cfg.vllm_gpu_memory


_ENGINE: Engine | None = None


def engine(policy: PolicyConfig, cfg: GenerateConfig, adapter: Path | None) -> Engine:
    """The process's engine, made on first use and again only when the policy or settings change or
    `adapter` needs a larger max_lora_rank (vLLM reserves GPU memory for one engine at a time).

    Raises:
        ConfigError: vllm is not installed, or no CUDA device (one line, with the fix).
    """
    global _ENGINE
    problems = check_backend(cfg, lora=True)
    if problems:
        raise ConfigError(problems[0])
    rank = lora_rank(adapter) if adapter is not None else 1
    if _ENGINE is not None and (_ENGINE.settings != _engine_settings(policy, cfg) or _ENGINE.rank < rank):
        if _ENGINE.settings == _engine_settings(policy, cfg):
            rank = max(rank, _ENGINE.rank)
        release()
    if _ENGINE is None:
        _ENGINE = Engine(policy, cfg, rank)
    return _ENGINE


def release() -> None:
    """Drop the process's engine and give its GPU memory back."""
    global _ENGINE
    if _ENGINE is None:
        return
    _ENGINE = None
    gc.collect()
    import torch

    torch.cuda.empty_cache()
