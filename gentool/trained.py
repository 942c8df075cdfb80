"""Trained models from Python: `gentool.load` and what a loaded model does.

`gentool sample`, `interpolate`, `reconstruct` and `encode` are thin callers of this module: they
load a `TrainedModel`, call one method, and write a file. So a script gets what the command line
gets: the same seeded sampling, the same checks of what the plugin returns, and the same errors,
raised as gentool's own exception types (`gentool.errors`) instead of printed.

Images go in as uint8 pixels, float tensors in the model's value range, PIL images, image files
or lists of them (`gentool.image_inputs`), and come out as uint8 (N, C, H, W) by default, or as
floats in the model's value range with `output="float"`, on the model's device.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from gentool.api import Capabilities, DataSpec
from gentool.checkpoint import RunFolder
from gentool.data import to_uint8
from gentool.devices import resolve_device
from gentool.errors import CapabilityError, GentoolError, PluginError
from gentool.image_inputs import ImageInput, model_inputs
from gentool.limits import check_allocation
from gentool.models import calling, load_trained
from gentool.record import RunRecord
from gentool.registry import PluginEntry, resolve
from gentool.sampling import check_images, device_of, draw, evaluating

Output = Literal["uint8", "float"]
Interpolation = Literal["lerp", "slerp"]
BATCH = 256  # images a call of the model's encode/reconstruct: bounds the memory of large inputs


def load(
    run: str | os.PathLike[str], *, device: str = "auto", raw_weights: bool = False
) -> TrainedModel:
    """The trained model of `run`: a run folder, or a model's name for its newest run under
    ./runs. Runs trained with --ema load their moving average, the weights that sample, unless
    `raw_weights` (or take `.raw` / `.ema` of the loaded model)."""
    if not isinstance(run, (str, os.PathLike)) or not isinstance(device, str):
        raise GentoolError(
            f"load(run, device=...) takes a run folder or a model's name, and a device name; got "
            f"{type(run).__name__} and {type(device).__name__}"
        )
    folder = RunFolder(Path(run).expanduser())
    entry: PluginEntry | None = None
    if isinstance(run, str) and "/" not in run and os.sep not in run:
        # A name means its newest run, as on the command line, even where a folder has the name.
        try:
            entry, run_dir = resolve(run), None
        except PluginError:
            if not folder.exists():
                raise
    if entry is None:
        if not folder.exists():
            raise GentoolError(f"{str(run)!r} is not a run folder (it holds no run.json)")
        entry, run_dir = resolve(folder.read().plugin.name), folder.path
    return TrainedModel.from_run(entry, run_dir, resolve_device(device), averaged=not raw_weights)


class TrainedModel:
    """A run's model with the weights of its checkpoint, in eval mode.

    `plugin`, `record` (the run's run.json), `run` (its folder) and `module` (the torch module
    the plugin built) are there for what this class does not cover.
    """

    def __init__(
        self,
        entry: PluginEntry,
        module: torch.nn.Module,
        record: RunRecord,
        run: RunFolder,
        *,
        averaged: bool,
    ) -> None:
        assert entry.plugin is not None  # the registry resolves loaded plugins only
        self.entry, self.plugin, self.module = entry, entry.plugin, module
        self.record, self.run = record, run
        self.weights = "ema" if averaged and record.training.ema is not None else "raw"

    @classmethod
    def from_run(
        cls, entry: PluginEntry, run_dir: Path | None, device: torch.device, *, averaged: bool
    ) -> TrainedModel:
        module, record, run = load_trained(entry, run_dir, device, averaged=averaged)
        return cls(entry, module, record, run, averaged=averaged)

    def __repr__(self) -> str:
        return (
            f"TrainedModel({self.name!r}, run={str(self.run)!r}, epoch={self.record.progress.epoch}"
            f", weights={self.weights!r}, device={str(self.device)!r})"
        )

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def spec(self) -> DataSpec:
        """The shape of the images (channels, height, width) and the class names."""
        return self.record.data.spec

    @property
    def _image_shape(self) -> tuple[int, int, int]:
        return (self.spec.channels, self.spec.height, self.spec.width)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def value_range(self) -> tuple[float, float]:
        return self.plugin.value_range

    @property
    def capabilities(self) -> Capabilities:
        return self.plugin.capabilities

    @property
    def device(self) -> torch.device:
        return device_of(self.module)

    @property
    def ema(self) -> TrainedModel:
        """This run's model with the moving average of its weights (`train --ema`)."""
        if self.record.training.ema is None:
            raise GentoolError(
                f"the run in {self.run} kept no moving average of its weights (train with --ema)"
            )
        return self if self.weights == "ema" else self._reloaded(averaged=True)

    @property
    def raw(self) -> TrainedModel:
        """This run's model with its trained weights, not their moving average."""
        return self if self.weights == "raw" else self._reloaded(averaged=False)

    def _reloaded(self, *, averaged: bool) -> TrainedModel:
        return TrainedModel.from_run(self.entry, self.run.path, self.device, averaged=averaged)

    def to(self, device: str | torch.device) -> TrainedModel:
        """Move the model to `device` ("cpu", "cuda", "cuda:1", "auto"); returns it."""
        self.module.to(resolve_device(str(device)))
        return self

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        label: str | int | None = None,
        labels: Sequence[str | int] | torch.Tensor | None = None,
        output: Output = "uint8",
    ) -> torch.Tensor:
        """`n` new images drawn from `seed`: the same seed, the same images. Conditional models
        draw `label` (a class name or index), or one label per image in `labels`, or else the
        classes in turn."""
        self._require(self.capabilities.sample, "sample new images")
        count = self._images_that_fit(_count(n, "n"))
        images = draw(
            self.module, self.plugin, self.spec, count, seed=_seed(seed),
            labels=self.class_labels(count, label, labels),
        )  # fmt: skip
        return self._output(images, output)

    def _images_that_fit(self, count: int) -> int:
        """`count`, once that many float images fit in this machine's memory."""
        spec = self.spec
        check_allocation(
            count * spec.channels * spec.height * spec.width * 4,
            f"{count} images of {spec.height}×{spec.width}",
            "ask for fewer",
        )
        return count

    def class_labels(
        self,
        count: int,
        label: str | int | None = None,
        labels: Sequence[str | int] | torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """(count,) int64 class indexes from a label or a label per image; None for models
        that are not conditional, and classes in turn when neither is given."""
        if not self.capabilities.conditional:
            if label is not None or labels is not None:
                raise CapabilityError(f"{self.name} is not conditional: it takes no labels")
            return None
        if label is not None and labels is not None:
            raise GentoolError("give label (one class for all) or labels (one per image), not both")
        if labels is not None:
            if isinstance(labels, (str, bytes)) or getattr(labels, "ndim", 1) != 1:
                raise GentoolError("labels is one label per image: a list or a 1-d tensor")
            values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
            if len(values) != count:
                raise GentoolError(f"labels has {len(values)} entries for {count} images")
            return torch.tensor([self.class_index(value) for value in values], dtype=torch.int64)
        if label is not None:
            return torch.full((count,), self.class_index(label), dtype=torch.int64)
        return torch.arange(count) % self.spec.num_classes

    def class_index(self, label: str | int, *, called: str = "label") -> int:
        """A class by name or index, as an index; an error names the argument as `called`."""
        names = self.class_names
        if isinstance(label, str) and label in names:
            return names.index(label)
        index = _whole_number(label)
        if index is None and isinstance(label, str) and label.isdigit():
            index = int(label)
        if index is None or not 0 <= index < len(names):
            listed = ", ".join(f"{position}={name}" for position, name in enumerate(names))
            raise GentoolError(f"unknown {called} {label!r}; the classes are {listed}")
        return index

    def encode(self, images: ImageInput, *, batch_size: int = BATCH) -> torch.Tensor:
        """The codes of `images`, (N, ...) as the model makes them."""
        self._require(self.capabilities.encode, "encode images")
        inputs = self.model_inputs(images)
        return self._batched("encode", inputs, batch_size)

    def decode(
        self,
        codes: torch.Tensor,
        *,
        label: str | int | None = None,
        labels: Sequence[str | int] | torch.Tensor | None = None,
        output: Output = "uint8",
    ) -> torch.Tensor:
        """Images from codes (N, ...), as `encode` or the model's prior make them; conditional
        models decode `label`, or one label per code in `labels`, or else the classes in turn."""
        self._require(hasattr(self.module, "decode"), "decode codes into images")
        codes = self._checked_codes(codes)
        class_labels = self.class_labels(codes.shape[0], label, labels)
        images = self._decoded(codes, class_labels)
        return self._output(images, output)

    def _checked_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.ndim < 2 or not codes.is_floating_point():
            raise GentoolError("codes must be a float tensor (N, ...), as encode returns them")
        shape = self.code_shape()
        if shape is not None and tuple(codes.shape[1:]) != shape:
            expected = ", ".join(map(str, shape))
            raise GentoolError(
                f"codes of shape {tuple(codes.shape)} do not fit {self.name}, whose codes are "
                f"(N, {expected})"
            )
        self._images_that_fit(codes.shape[0])
        if not bool(torch.isfinite(codes).all()):
            raise GentoolError("codes hold values that are not finite (NaN or infinity)")
        return codes.to(self.device, torch.float32)

    def code_shape(self) -> tuple[int, ...] | None:
        """The shape of one code, as the model's prior draws it; None for models without one."""
        if not hasattr(self.module, "sample_latent"):
            return None
        generator = torch.Generator(device=self.device).manual_seed(0)
        with evaluating(self.module), calling(self.plugin, "sample_latent"):
            labels = self.class_labels(1)
            on_device = None if labels is None else labels.to(self.device)
            one = self.module.sample_latent(1, labels=on_device, generator=generator)
        return tuple(one.shape[1:])

    def reconstruct(
        self, images: ImageInput, *, output: Output = "uint8", batch_size: int = BATCH
    ) -> torch.Tensor:
        """Each image passed through the model and back."""
        self._require(self.capabilities.reconstruct, "reconstruct images")
        inputs = self.model_inputs(images)
        reconstructions = self._batched("reconstruct", inputs, batch_size)
        check_images(
            self.plugin, reconstructions, (inputs.shape[0], *self._image_shape), "reconstruct"
        )
        return self._output(reconstructions, output)

    def interpolate(
        self,
        steps: int = 8,
        *,
        rows: int = 1,
        seed: int = 0,
        method: Interpolation = "slerp",
        start: ImageInput | None = None,
        end: ImageInput | None = None,
        label: str | int | None = None,
        output: Output = "uint8",
    ) -> torch.Tensor:
        """Walks through latent space, (rows, steps, C, H, W): each row from one code to
        another, ends included. The codes are pairs drawn from the model's prior with `seed`,
        or, given `start` and `end` images, their codes (one row)."""
        self._require(hasattr(self.module, "decode"), "decode codes into images, so it cannot walk")
        if method not in ("lerp", "slerp"):
            raise GentoolError(f"method must be lerp or slerp, got {method!r}")
        steps, rows = _count(steps, "steps", least=2), _count(rows, "rows")
        self._images_that_fit(steps * rows)
        if (start is None) != (end is None):
            raise GentoolError("start and end go together: give both images or neither")
        if start is not None:
            if rows != 1:
                raise GentoolError("rows is for walks between random codes; two images make one")
            first, last = (
                self._one_code(image, called) for image, called in ((start, "start"), (end, "end"))
            )
            class_labels = self.class_labels(1, label)
        else:
            first, last, class_labels = self._prior_pairs(rows, _seed(seed), label)
        walk = torch.stack([_walk_point(first, last, t, method) for t in _fractions(steps)], 1)
        flat = walk.flatten(0, 1)  # (rows·steps, ...): row by row
        row_labels = None if class_labels is None else class_labels.repeat_interleave(steps)
        images = self._decoded(flat, row_labels)
        return self._output(images, output).unflatten(0, (walk.shape[0], steps))

    def _one_code(self, image: ImageInput, called: str) -> torch.Tensor:
        codes = self.encode(image)
        if codes.shape[0] != 1:
            raise GentoolError(f"{called} is one image; got {codes.shape[0]}")
        return codes

    def _prior_pairs(
        self, rows: int, seed: int, label: str | int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not hasattr(self.module, "sample_latent"):
            raise CapabilityError(
                f"{self.name} has no prior to draw random codes from: walk between two images "
                "(start and end)"
            )
        class_labels = self.class_labels(rows, label)
        on_device = None if class_labels is None else class_labels.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with evaluating(self.module), calling(self.plugin, "sample_latent"):
            first = self.module.sample_latent(rows, labels=on_device, generator=generator)
            last = self.module.sample_latent(rows, labels=on_device, generator=generator)
        return first, last, class_labels

    def _decoded(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # Labels go only to conditional models: an autoencoder's decode(code) may take none.
        by_class = {} if labels is None else {"labels": labels.to(self.device)}
        with evaluating(self.module), calling(self.plugin, "decode"):
            images = self.module.decode(codes, **by_class)
        check_images(self.plugin, images, (codes.shape[0], *self._image_shape), "decode")
        return images

    def _batched(self, method: str, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
        outputs = []
        batch_size = _count(batch_size, "batch_size")
        with evaluating(self.module):
            for start in range(0, inputs.shape[0], batch_size):
                batch = inputs[start : start + batch_size].to(self.device)
                with calling(self.plugin, method):
                    result = getattr(self.module, method)(batch)
                if not isinstance(result, torch.Tensor) or result.shape[:1] != batch.shape[:1]:
                    got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result)
                    raise PluginError(
                        f"{self.name}: {method} of {batch.shape[0]} images returned {got}, "
                        "expected one result per image"
                    )
                outputs.append(result.detach())
        return torch.cat(outputs)

    def model_inputs(self, images: ImageInput) -> torch.Tensor:
        """`images` in any accepted form as (N, C, H, W) floats in the model's value range."""
        return model_inputs(images, self.spec, self.value_range)

    def _output(self, images: torch.Tensor, output: Output) -> torch.Tensor:
        if output not in ("uint8", "float"):
            raise GentoolError(f"output must be 'uint8' or 'float', got {output!r}")
        if not bool(torch.isfinite(images).all()):
            raise PluginError(f"{self.name} returned images that are not finite (NaN or infinity)")
        if output == "float":
            return images
        return to_uint8(images, self.value_range)

    def _require(self, able: bool, what: str) -> None:
        if not able:
            raise CapabilityError(f"{self.name} cannot {what}; {can_do(self)}")


def can_do(model: TrainedModel) -> str:
    """What a model can do instead, in words for the error of something it cannot."""
    able = [
        name
        for name, present in (
            ("sample", model.capabilities.sample),
            ("encode", model.capabilities.encode),
            ("decode", hasattr(model.module, "decode")),
            ("reconstruct", model.capabilities.reconstruct),
        )
        if present
    ]
    return f"it can {', '.join(able)}" if able else "it only trains"


def _whole_number(value: object) -> int | None:
    """`value` as an int when it is a whole number (Python, NumPy or a 0-d integer tensor), not
    a bool."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _count(value: int, name: str, *, least: int = 1) -> int:
    number = _whole_number(value)
    if number is None or number < least:
        raise GentoolError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return number


def _seed(value: int) -> int:
    number = _whole_number(value)
    if number is None or not 0 <= number < 2**63:
        raise GentoolError(f"seed must be a whole number from 0 to 2**63 - 1, got {value!r}")
    return number


def slerp(start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each row pair (White 2016): keeps norms typical of a Gaussian."""
    start_flat, end_flat = start.flatten(1), end.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(start_flat, end_flat, dim=1).clamp(-1, 1)
    omega = torch.arccos(cosine)[:, None]  # (rows, 1)
    sin_omega = torch.sin(omega)
    nearly_parallel = sin_omega.abs() < 1e-6
    safe = torch.where(nearly_parallel, torch.ones_like(sin_omega), sin_omega)
    spherical = (torch.sin((1 - t) * omega) * start_flat + torch.sin(t * omega) * end_flat) / safe
    linear = torch.lerp(start_flat, end_flat, t)
    return torch.where(nearly_parallel, linear, spherical).view_as(start)


def _walk_point(start: torch.Tensor, end: torch.Tensor, t: float, method: Interpolation):
    if t == 0.0:
        return start  # exact endpoints: an image walk starts at the image's own code
    if t == 1.0:
        return end
    return slerp(start, end, t) if method == "slerp" else torch.lerp(start, end, t)


def _fractions(steps: int) -> list[float]:
    return [index / (steps - 1) for index in range(steps)]
