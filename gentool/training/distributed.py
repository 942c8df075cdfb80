"""Data-parallel training across processes, launched by torchrun.

`torchrun --nproc-per-node N -m gentool train NAME ...` starts N copies of the same command and
tells each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...).
Each process joins one torch.distributed group (NCCL between GPUs, gloo on the CPU), trains the
same weights on its own shard of every batch, and, at every optimizer step, averages that
optimizer's gradients across the group before stepping: the reduction DDP performs, done at
`ctx.step` so that it covers every way a plugin makes gradients (two discriminator calls per
step, layer-wise phases, CD-1 updates written into `.grad` by hand) without wrapping its modules.
Rank 0 alone writes the run folder and draws the progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gentool.errors import GentoolError

# Per-rank noise seeds: a run's seed and a rank (and the step a resumed run starts at) map to
# distinct, reproducible seeds.
_RANK_SEED_STRIDE = 1_000_003
_STEP_SEED_STRIDE = 7_919


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks_from_environment() -> Ranks:
    """The place torchrun gave this process, read from RANK, WORLD_SIZE and LOCAL_RANK."""
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = os.environ.get(name, str(default))
        try:
            values[name] = int(text)
        except ValueError:
            raise GentoolError(
                f"${name} is {text!r}, not a number: launch with torchrun or unset it"
            ) from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
        raise GentoolError(
            f"$RANK {ranks.rank} does not fit $WORLD_SIZE {ranks.world_size}: "
            "launch with torchrun or unset them"
        )
    return ranks


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[torch.device]:
    """This process's device, in torchrun's process group while the block runs (`device` as it
    is outside torchrun). The group is left once every rank has finished the block: gloo may
    abort a process whose peer tears the group down while its last exchange is under way. A
    rank that failed leaves at once, as the others may never get that far."""
    if not ranks.distributed:
        yield device
        return
    device = _join_group(ranks, device)
    try:
        yield device
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _join_group(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group torchrun set up; return this rank's device (one GPU per process)."""
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise GentoolError(
                f"local rank {ranks.local_rank} has no GPU of its own "
                f"({torch.cuda.device_count()} visible): lower --nproc-per-node"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size)
    return device


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank `rank`'s noise, from the run's seed (and the step it starts at)."""
    return (seed * _RANK_SEED_STRIDE + rank * _STEP_SEED_STRIDE + step) % 2**63


def shard_size(batch_size: int, ranks: Ranks) -> int:
    """Images per process in a step: the global batch split evenly."""
    if batch_size % ranks.world_size:
        raise GentoolError(
            f"--batch-size {batch_size} does not split over {ranks.world_size} processes: "
            f"use a multiple of {ranks.world_size}"
        )
    return batch_size // ranks.world_size


def average_gradients(parameters: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over the group, in one all-reduce per dtype."""
    for grads in _by_dtype(p.grad for p in parameters if p.grad is not None):
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        flat /= world_size
        _unflatten_into(flat, grads)


def broadcast_from_main(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite `tensors` on every rank with rank 0's values (weights at the start, and the
    BatchNorm statistics after each step, as DDP does, so all ranks hold one model)."""
    for group in _by_dtype(tensors):
        flat = torch.cat([tensor.detach().reshape(-1) for tensor in group])
        dist.broadcast(flat, src=0)
        _unflatten_into(flat, group)


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """`values` summed element by element over the group: one all-reduce (the logged values of
    a logging interval, and whether any rank was asked to stop, travel together)."""
    total = values.cuda() if dist.get_backend() == "nccl" and not values.is_cuda else values.clone()
    dist.all_reduce(total)
    return total


def all_agree(flag: bool) -> bool:
    """True when `flag` is true on every rank."""
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(packed)
    return bool(packed.item() == 0)


def gather_to_all(value: object, world_size: int) -> list[object]:
    """Every rank's `value` (a small JSON-friendly object), in rank order."""
    gathered: list[object] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def main_value(value: object) -> object:
    """Rank 0's `value` on every rank."""
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _by_dtype(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return list(groups.values())


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for tensor in tensors:
            count = tensor.numel()
            tensor.copy_(flat[offset : offset + count].view_as(tensor))
            offset += count
