"""Shuffled batches of a decoded data set, reproducible per (seed, epoch) and sharded over
processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gentool.api import Batch
from gentool.data.dataset import ImageDataset, to_value_range
from gentool.errors import DataError


class BatchLoader:
    """Shuffled batches, reproducible per (seed, epoch) so that a run can resume exactly.

    In a distributed run (`world_size` processes) every process draws the same permutation of
    the epoch and takes its own contiguous block of each global batch of `batch_size` images:
    the processes see disjoint images, and together exactly the batch a single process would,
    whatever their number.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        device: torch.device,
        value_range: tuple[float, float],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"--batch-size must be at least 1, got {batch_size}")
        if len(dataset) < batch_size:
            raise DataError(
                f"the data has {len(dataset)} images, fewer than one batch of {batch_size}: "
                "lower --batch-size or add images"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.value_range = value_range
        self.seed = seed
        self.shard = batch_size // world_size  # images per process; the trainer checks it divides
        self.rank = rank

    @property
    def steps_per_epoch(self) -> int:
        # Incomplete batches are dropped: batch statistics and GAN losses assume full batches.
        return len(self.dataset) // self.batch_size

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, skipping the first `start_step` (when resuming mid-epoch)."""
        # Any run seed (up to 2⁶³ − 1) and epoch map to a seed torch takes.
        generator = torch.Generator().manual_seed((self.seed * 100_003 + epoch) % 2**63)
        order = torch.randperm(len(self.dataset), generator=generator)
        for step in range(start_step, self.steps_per_epoch):
            start = step * self.batch_size + self.rank * self.shard
            indexes = order[start : start + self.shard]
            images = self.dataset.images[indexes].to(self.device, non_blocking=True)
            labels = self.dataset.labels
            yield Batch(
                images=to_value_range(images, self.value_range),
                labels=None if labels is None else labels[indexes].to(self.device),
            )
