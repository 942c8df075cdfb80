"""Shuffled batches of a decoded data set, reproducible per (seed, epoch) and sharded over
processes; flipped at random when asked; on a GPU, copied one batch ahead."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gentool.api import Batch
from gentool.data.dataset import ImageDataset, to_value_range
from gentool.errors import DataError
from gentool.terminal import counted

AUGMENTATIONS = ("flip",)
_FLIP_STREAM = 0x666C6970  # keeps the flips' random stream apart from the shuffle's
_PINNED_BUFFERS = 3  # a batch being gathered, one being copied, one the step is reading


class BatchLoader:
    """Shuffled batches, reproducible per (seed, epoch) so that a run can resume exactly.

    In a distributed run (`world_size` processes) every process draws the same permutation of
    the epoch and takes its own contiguous block of each global batch of `batch_size` images:
    the processes see disjoint images, and together exactly the batch a single process would,
    whatever their number. With "flip" in `augment`, each image of an epoch is mirrored left to
    right or not as a draw from (seed, epoch, its index) decides, the same in every process and
    on every resume.

    On a CUDA device, each batch is gathered into pinned memory and copied on a side stream
    while the step before it runs; elsewhere it is gathered when it is asked for.
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
        augment: tuple[str, ...] = (),
    ) -> None:
        if batch_size < 1:
            raise DataError(f"--batch-size must be at least 1, got {batch_size}")
        if len(dataset) < batch_size:
            raise DataError(
                f"the data has {counted(len(dataset), 'image')}, fewer than one batch of "
                f"{batch_size}: lower --batch-size or add images"
            )
        unknown = sorted(set(augment) - set(AUGMENTATIONS))
        if unknown:
            raise DataError(
                f"unknown augmentation {unknown[0]!r}: --augment takes {', '.join(AUGMENTATIONS)}"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.value_range = value_range
        self.seed = seed
        self.shard = batch_size // world_size  # images per process; the trainer checks it divides
        self.rank = rank
        self.flip = "flip" in augment

    @property
    def steps_per_epoch(self) -> int:
        # Incomplete batches are dropped: batch statistics and GAN losses assume full batches.
        return len(self.dataset) // self.batch_size

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, skipping the first `start_step` (when resuming mid-epoch)."""
        order = torch.randperm(len(self.dataset), generator=self._generator(epoch))
        flips = None
        if self.flip:
            generator = self._generator(epoch, stream=_FLIP_STREAM)
            flips = torch.rand(len(self.dataset), generator=generator) < 0.5
        shards = (
            order[step * self.batch_size + self.rank * self.shard :][: self.shard]
            for step in range(start_step, self.steps_per_epoch)
        )
        if self.device.type == "cuda":
            yield from self._copied_ahead(shards, flips)
            return
        for indexes in shards:
            images, labels = self._gather(indexes)
            yield self._batch(images, labels, None if flips is None else flips[indexes])

    def _generator(self, epoch: int, stream: int = 0) -> torch.Generator:
        # Any run seed (up to 2⁶³ − 1) and epoch map to a seed torch takes.
        return torch.Generator().manual_seed((self.seed * 100_003 + epoch + stream) % 2**63)

    def _gather(
        self, indexes: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images (uint8) and labels at `indexes`, into `out` when given."""
        images, labels = self.dataset.images, self.dataset.labels
        if out is None:
            return images[indexes], None if labels is None else labels[indexes]
        torch.index_select(images, 0, indexes, out=out[0])
        if labels is not None and out[1] is not None:
            torch.index_select(labels, 0, indexes, out=out[1])
        return out

    def _batch(
        self, images: torch.Tensor, labels: torch.Tensor | None, flips: torch.Tensor | None
    ) -> Batch:
        """A batch on the device, in the model's value range; `images` may be there already."""
        images = images.to(self.device, non_blocking=True)
        if flips is not None:
            flips = flips.to(self.device, non_blocking=True).view(-1, 1, 1, 1)
            images = torch.where(flips, images.flip(-1), images)
        return Batch(
            images=to_value_range(images, self.value_range),
            labels=None if labels is None else labels.to(self.device, non_blocking=True),
        )

    def _copied_ahead(
        self, shards: Iterator[torch.Tensor], flips: torch.Tensor | None
    ) -> Iterator[Batch]:
        """Batches whose copy to the GPU began while the previous step ran: gathered into pinned
        host memory (a copy from pageable memory cannot overlap), copied on a side stream, and
        waited for by the step's stream only when the step needs them."""
        copies = torch.cuda.Stream(self.device)
        buffers = [self._pinned_buffers() for _ in range(_PINNED_BUFFERS)]
        done = [torch.cuda.Event() for _ in range(_PINNED_BUFFERS)]
        ahead = None
        for count, indexes in enumerate(shards):
            slot = count % _PINNED_BUFFERS
            done[slot].synchronize()  # the copy that last read this buffer has finished
            images, labels = self._gather(indexes, buffers[slot])
            with torch.cuda.stream(copies):
                copied = (
                    images.to(self.device, non_blocking=True),
                    None if labels is None else labels.to(self.device, non_blocking=True),
                )
                done[slot].record(copies)
            if ahead is not None:
                yield self._arrived(*ahead)
            ahead = (copied, done[slot], None if flips is None else flips[indexes])
        if ahead is not None:
            yield self._arrived(*ahead)

    def _arrived(
        self,
        copied: tuple[torch.Tensor, torch.Tensor | None],
        event: torch.cuda.Event,
        flips: torch.Tensor | None,
    ) -> Batch:
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(event)
        for tensor in copied:
            if tensor is not None:
                tensor.record_stream(stream)  # made on the side stream, freed after this one
        return self._batch(*copied, flips)

    def _pinned_buffers(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = self.dataset.images, self.dataset.labels
        pinned_images = torch.empty(
            (self.shard, *images.shape[1:]), dtype=images.dtype, pin_memory=True
        )
        pinned_labels = (
            None if labels is None else torch.empty(self.shard, dtype=labels.dtype, pin_memory=True)
        )
        return pinned_images, pinned_labels
