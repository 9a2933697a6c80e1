"""What the process runs on: the device's name, whether it runs bfloat16 natively."""

from __future__ import annotations


def device_name() -> str:
    """The first CUDA device's name, or `cpu`."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def native_bf16(device: str) -> bool:
    """Whether `device` runs bfloat16 matmuls natively (CUDA with bf16; CPUs with AVX512-BF16/AMX),
    i.e. whether bf16 autocast is a speed-up rather than an emulation (4x on a 2-core Xeon with AMX)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
