"""Data-parallel training (PyTorch DDP): who this process is, the global batches it takes its share
of, and the `torchrun` launch of the train step.

One process per GPU (or per CPU share with the gloo backend). Every rank draws the same global
batches from the same seeded sampler and takes every world-th item of each, so that the gradients
averaged over the ranks are those of the single-process batch: the same global batch size and seed
give the same model (within float summation order; BatchNorm is synchronised across GPUs, not on
CPUs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes metrics, checkpoint, card and the MLflow run."""
        return self.rank == 0


def launched() -> bool:
    """True inside a process started by torchrun (its environment names the world)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main() -> bool:
    """Rank 0, or not distributed at all."""
    return int(os.environ.get("RANK", "0")) == 0


def start(device_type: str) -> World:
    """Join the process group torchrun set up (nccl on GPUs, gloo on CPUs); pick this rank's GPU."""
    world = World(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchShard(Sampler[list[int]]):
    """This rank's share (items rank, rank + size, ...) of each global batch drawn from `sampler`.

    Every rank iterates the same seeded `sampler`, so the shares of one step together are exactly
    the single-process batch. A last global batch smaller than the world is dropped (a rank would
    have nothing to compute)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, world: World):
        self.sampler, self.batch_size, self.world = sampler, batch_size, world

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch[self.world.rank :: self.world.size]
                batch = []
        if len(batch) >= self.world.size:
            yield batch[self.world.rank :: self.world.size]

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        full, rest = divmod(n, self.batch_size)
        return full + (rest >= self.world.size)


def reduce_sum(values: list[float] | torch.Tensor) -> torch.Tensor:
    """The element-wise sum over all ranks (float64 on the CPU for gloo, else on the GPU)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu()


def launch(args_json: str | Path, processes: int, threads: int) -> None:
    """Run `python -m aquaflow.backends.torch_train ARGS_JSON` as `processes` ranks under torchrun
    on this machine (one per GPU; CPUs share `threads`); raise if any rank fails."""
    library = str(Path(__file__).resolve().parents[2])  # the folder holding the aquaflow package
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (library, os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": str(max(1, threads // processes)),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "aquaflow.backends.torch_train",
        str(args_json),
    ]
    subprocess.run(cmd, env=env, check=True)
