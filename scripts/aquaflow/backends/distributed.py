"""Data-parallel training (PyTorch DDP): who this process is, the global batches it takes its share
of, and the launch of the train step's ranks: `torchrun` on one machine, or the Slurm tasks of the
train job (`srun`, one or several nodes).

One process per GPU (or per CPU share with the gloo backend). Every rank draws the same global
batches from the same seeded sampler and takes every world-th item of each, so that the gradients
averaged over the ranks are those of the single-process batch: the same global batch size and seed
give the same model (within float summation order; BatchNorm is synchronised across GPUs, not on
CPUs).
"""

from __future__ import annotations

import os
import shlex
import socket
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
    if device_type == "cuda":  # Slurm may show each task only its own GPU
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
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


def launch(args_json: str | Path, processes: int, threads: int, launcher: str | None = None) -> None:
    """Run `python -m aquaflow.backends.torch_train ARGS_JSON` as ranks; raise if any rank fails.

    Without `launcher`: `processes` ranks under torchrun on this machine (one per GPU; CPUs share
    `threads`). With a Slurm launcher (the job's `mpi` resource, e.g. `srun`): one rank per task
    of the Slurm job, on every node of it; ARGS_JSON must then lie on the shared file system."""
    library = str(Path(__file__).resolve().parents[2])  # the folder holding the aquaflow package
    job = slurm_job() if launcher else {}
    ranks, per_rank = ranks_and_threads(processes, threads, launcher, job)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (library, os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": str(per_rank),
    }
    step = ["-m", "aquaflow.backends.torch_train", str(args_json)]
    if launcher:
        env.update(slurm_rendezvous(job))
        # explicit: the step inherits no task settings (Snakemake's job step strips SLURM_NTASKS...)
        tasks = [f"--ntasks={ranks}", f"--cpus-per-task={per_rank}", "--kill-on-bad-exit=1"]
        cmd = [*shlex.split(launcher), *tasks, sys.executable, *step]
    else:
        torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        cmd = [sys.executable, *torchrun, *step]
    subprocess.run(cmd, env=env, check=True)


def slurm_job() -> dict[str, str]:
    """`scontrol show job` of the Slurm job this process runs in, as key=value (NumTasks,
    CPUs/Task, NumNodes, NodeList, ...); {} outside one. Asked rather than read from SLURM_NTASKS
    and its kin, which Snakemake's job step removes from a job's environment."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return {}
    cmd = ["scontrol", "-o", "show", "job", job_id]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def ranks_and_threads(
    processes: int, threads: int, launcher: str | None, job: dict[str, str] | None = None
) -> tuple[int, int]:
    """The ranks a launch starts and the CPU threads of each: `processes` sharing `threads`, or
    with a Slurm launcher the tasks of the Slurm `job` (slurm_job()) with their CPUs per task."""
    if not launcher:
        return processes, max(1, threads // processes)
    if Path(shlex.split(launcher)[0]).name != "srun":
        raise ValueError(f"the train job's mpi resource starts the ranks with srun; got {launcher!r}")
    job = slurm_job() if job is None else job
    if not job.get("NumTasks", "").isdigit():
        raise RuntimeError(
            f"training.distributed with the train job's mpi resource ({launcher!r}) needs a Slurm job"
            " with tasks (profiles/slurm: set-resources train: mpi, tasks); this job is not one"
        )
    cpus = job.get("CPUs/Task", "1")
    return int(job["NumTasks"]), int(cpus) if cpus.isdigit() else 1


def slurm_rendezvous(job: dict[str, str]) -> dict[str, str]:
    """Where rank 0 listens, for the tasks of the Slurm `job`: its first node (the batch script
    runs there, and so does task 0), a port free on it; 127.0.0.1 when the job has one node."""
    host = "127.0.0.1"
    if int(job.get("NumNodes", "1").split("-")[0]) > 1:
        cmd = ["scontrol", "show", "hostnames", job["NodeList"]]
        host = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[0]
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return {"MASTER_ADDR": host, "MASTER_PORT": str(port), "AQUAFLOW_DDP_SLURM": "1"}


def world_from_slurm() -> None:
    """In a rank started by `srun` (AQUAFLOW_DDP_SLURM): name the world as torchrun would (RANK,
    WORLD_SIZE, LOCAL_RANK from the Slurm task's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID)."""
    if os.environ.get("AQUAFLOW_DDP_SLURM") and not launched():
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
