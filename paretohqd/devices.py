"""What the process runs on: the device's name, whether it runs bfloat16 natively, the process
group a launcher (`torchrun`, `accelerate launch`) asked for, and how a step's work is split over
that group (`shard`, `Ranks`)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class LaunchError(RuntimeError):
    """Several processes were launched but they could not form one group (one line for the user)."""


# Steps that only the main process runs (preparing the data, training the offline reward heads,
# selection) keep the others in a barrier for as long as they take, which can be hours for a large
# set: far past torch's default 10-30 minute collective timeout.
GROUP_TIMEOUT = dt.timedelta(hours=48)


def init_processes():
    """Join the process group the launcher's environment describes, once per process; returns
    accelerate's `PartialState` (`num_processes`, `process_index`, `is_main_process`).

    WORLD_SIZE > 1 (set by `torchrun` and `accelerate launch`) forms the group: NCCL on GPUs,
    gloo on CPUs (accelerate stays single-process on CPU unless told `cpu=True`), so two CPU
    processes form one group exactly as two GPUs do. Without a launcher: one process.

    Raises:
        LaunchError: several processes were launched but no group of that size formed (each
            would otherwise run the whole pipeline on its own).
    """
    import torch
    from accelerate import PartialState

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return PartialState()
    try:
        state = PartialState(cpu=not torch.cuda.is_available(), timeout=GROUP_TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise LaunchError(f"{world} processes were launched but could not form a group: {e}") from None
    if state.num_processes != world:
        # e.g. accelerate's state was made single-process before this call, or a backend is missing
        raise LaunchError(f"{world} processes were launched (WORLD_SIZE) but this one runs alone "
                          f"({state.distributed_type}); launch with `torchrun` or `accelerate launch`")
    return state


def shard(n_items: int, rank: int, world: int) -> range:
    """The items of rank `rank` of `world`: round robin (r, r + world, r + 2 world, ...), so that
    neighbours, which are alike (batches sorted by length), go to different ranks.

    Examples:
        >>> list(shard(5, 0, 2)), list(shard(5, 1, 2)), list(shard(1, 1, 2))
        ([0, 2, 4], [1, 3], [])
    """
    return range(rank, n_items, world)


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The items in their first order again, from each rank's `shard` of them (`parts[r]`, in order).

    Examples:
        >>> unshard([["a", "c", "e"], ["b", "d"]])
        ['a', 'b', 'c', 'd', 'e']
    """
    world = len(parts)
    return [parts[i % world][i // world] for i in range(sum(len(p) for p in parts))]


class Ranks:
    """This process's place among the launched ones (`init_processes`), to split a step's work over
    them: each runs its `shard` of the jobs, and the results are gathered in the jobs' order, so
    that they are those of one process whatever the number of ranks (every job seeds itself).
    The main process (rank 0) alone writes them. `shares` counts the jobs this process ran (the
    manifest's `busy_devices` counts the ranks that had some). One process: `Ranks()`, no group.
    """

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world, self.shares = rank, world, 0

    @classmethod
    def of(cls, state) -> Ranks:
        """The ranks of accelerate's `PartialState` (`init_processes`)."""
        return cls(state.process_index, state.num_processes)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, by rank, on every rank (a collective: every rank calls it)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)  # pickled: only what this run's own processes sent
        return out

    def broadcast(self, obj: T) -> T:
        """The main process's `obj`, on every rank (a collective)."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank is here (a collective)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def spread(self, jobs: Sequence[Callable[[], T]], done: Callable[[int, T], None] | None = None) -> list[T]:
        """Run `jobs` over the ranks, `world` at a time (one each, by `shard`), and return every
        result in the jobs' order on every rank. `done(i, result)` runs on the main process as each
        round ends, in order: it saves a result at once, so that a kill loses one round.
        """
        results: list = []
        for start in range(0, len(jobs), self.world):
            block = jobs[start:start + self.world]
            mine = [job() for job in (block[i] for i in shard(len(block), self.rank, self.world))]  # 0 or 1
            self.shares += len(mine)
            for i, result in enumerate(unshard(self.gather(mine)), start):
                if done is not None and self.main:
                    done(i, result)
                results.append(result)
        return results


def device_name() -> str:
    """The first CUDA device's name, or `cpu`."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def native_bf16(device: str) -> bool:
    """Whether `device` runs bfloat16 matmuls natively (CUDA with bf16; CPUs with AVX512-BF16/AMX),
    i.e. whether bf16 autocast is a speed-up rather than an emulation (4x on a 2-core Xeon with AMX).

    oneDNN's own check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) says yes for any AVX-512 CPU,
    where bf16 is emulated: on a 2-core Xeon with AVX-512 but neither AVX512-BF16 nor AMX, sampling
    SmolLM2-135M in bf16 ran 9x slower than in fp32 (benchmarks/bench_bf16.py). So the CPU's
    own flags decide, as torch reports them.

    `PARETOHQD_NATIVE_BF16=1` (or `0`) overrides the CPU's answer: to run on a CPU without native
    bf16 exactly what `auto` does on one with it (the tests do), or to keep float32 on one with it.
    """
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    forced = os.environ.get("PARETOHQD_NATIVE_BF16", "")
    if forced in ("0", "1"):
        return forced == "1"
    flags = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(f is None for f in flags):  # an older torch without them: oneDNN's check, as before
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return any(f() for f in flags if f is not None)


if __name__ == "__main__":  # `python -m paretohqd.devices`: what `auto` precision picks here (.ci/run prints it)
    cpu, name = native_bf16("cpu"), device_name()
    print(f"CPU runs bf16 natively: {'yes' if cpu else 'no'} (PARETOHQD_NATIVE_BF16="
          f"{os.environ.get('PARETOHQD_NATIVE_BF16', 'unset')}); auto precision on {name}: "
          f"{'bfloat16' if native_bf16('cpu' if name == 'cpu' else 'cuda') else 'float32'}")
