"""Trained models from Python: `gentool.load` and what a loaded model does.

`gentool sample`, `interpolate`, `reconstruct` and `encode` are thin callers of this module: they
load a `TrainedModel`, call one method, and write a file. So a script gets what the command line
gets: the same seeded sampling, the same checks of what the plugin returns, and the same errors,
raised as gentool's own exception types (`gentool.errors`) instead of printed.

Images go in as uint8 pixels (torch tensors (N, C, H, W) or (C, H, W); NumPy arrays (N, H, W, C),
(H, W, C) or (H, W), as Pillow and imageio lay them out), as float tensors already in the model's
value range (what `output="float"` gives back), as PIL images or image files (fitted to the
model's size as training data is). Images come out as uint8 (N, C, H, W) by default, or as floats
in the model's value range with `output="float"`, on the model's device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from gentool.api import Capabilities, DataSpec, ModelPlugin
from gentool.checkpoint import RunFolder
from gentool.data import load_image, to_uint8, to_value_range
from gentool.data.decode import fit_to_spec
from gentool.devices import resolve_device
from gentool.errors import CapabilityError, DataError, GentoolError, PluginError
from gentool.models import calling, load_trained
from gentool.record import RunRecord
from gentool.registry import PluginEntry, resolve
from gentool.sampling import device_of, draw, evaluating

Output = Literal["uint8", "float"]
Interpolation = Literal["lerp", "slerp"]
ImageInput = Any  # a tensor, a NumPy array, a PIL image, a path, or a sequence of them
BATCH = 256  # images a call of the model's encode/reconstruct: bounds the memory of large inputs


def load(
    run: str | os.PathLike[str], *, device: str = "auto", raw_weights: bool = False
) -> TrainedModel:
    """The trained model of `run`: a run folder, or a model's name for its newest run under
    ./runs. Runs trained with --ema load their moving average, the weights that sample, unless
    `raw_weights` (or take `.raw` / `.ema` of the loaded model)."""
    path = Path(run).expanduser()
    folder = RunFolder(path)
    if folder.exists():
        entry = resolve(folder.read().plugin.name)
        run_dir: Path | None = path
    elif "/" in str(run) or os.sep in str(run):
        raise GentoolError(f"{str(run)!r} is not a run folder (it holds no run.json)")
    else:  # a name, even where a folder has it too (a plugin's package folder, say)
        entry, run_dir = resolve(str(run)), None
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
        count = _count(n, "n")
        images = draw(
            self.module, self.plugin, self.spec, count, seed=seed,
            labels=self.class_labels(count, label, labels),
        )  # fmt: skip
        return self._output(images, output)

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
        index = int(label) if isinstance(label, int) or str(label).isdigit() else None
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
        """Images from codes (N, ...), as `encode` or the model's prior make them."""
        self._require(hasattr(self.module, "decode"), "decode codes into images")
        if not isinstance(codes, torch.Tensor) or codes.ndim < 2 or not codes.is_floating_point():
            raise GentoolError("codes must be a float tensor (N, ...), as encode returns them")
        class_labels = self.class_labels(codes.shape[0], label, labels)
        images = self._decoded(codes.to(self.device), class_labels)
        return self._output(images, output)

    def reconstruct(
        self, images: ImageInput, *, output: Output = "uint8", batch_size: int = BATCH
    ) -> torch.Tensor:
        """Each image passed through the model and back."""
        self._require(self.capabilities.reconstruct, "reconstruct images")
        inputs = self.model_inputs(images)
        reconstructions = self._batched("reconstruct", inputs, batch_size)
        _check_images(self.plugin, reconstructions, inputs.shape[0], self.spec)
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
        if (start is None) != (end is None):
            raise GentoolError("start and end go together: give both images or neither")
        if start is not None:
            first, last = (self.encode(image)[:1] for image in (start, end))
            class_labels = self.class_labels(1, label)
        else:
            first, last, class_labels = self._prior_pairs(rows, seed, label)
        walk = torch.stack([_walk_point(first, last, t, method) for t in _fractions(steps)], 1)
        flat = walk.flatten(0, 1)  # (rows·steps, ...): row by row
        row_labels = None if class_labels is None else class_labels.repeat_interleave(steps)
        images = self._decoded(flat, row_labels)
        return self._output(images, output).unflatten(0, (walk.shape[0], steps))

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
        _check_images(self.plugin, images, codes.shape[0], self.spec)
        return images

    def _batched(self, method: str, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
        outputs = []
        with evaluating(self.module):
            for start in range(0, inputs.shape[0], _count(batch_size, "batch_size")):
                batch = inputs[start : start + batch_size].to(self.device)
                with calling(self.plugin, method):
                    outputs.append(getattr(self.module, method)(batch))
        return torch.cat(outputs)

    def model_inputs(self, images: ImageInput) -> torch.Tensor:
        """`images` in any accepted form as (N, C, H, W) floats in the model's value range."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            return _checked_floats(images, self.spec, self.value_range)
        return to_value_range(as_pixels(images, self.spec), self.value_range)

    def _output(self, images: torch.Tensor, output: Output) -> torch.Tensor:
        if output == "float":
            return images
        if output == "uint8":
            return to_uint8(images, self.value_range)
        raise GentoolError(f"output must be 'uint8' or 'float', got {output!r}")

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


def as_pixels(images: ImageInput, spec: DataSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) pixels of `spec`'s shape from a uint8 tensor or array, PIL images
    and image files (fitted to the size, as training data is), or a sequence of them."""
    if isinstance(images, (str, os.PathLike)):
        return load_image(Path(images), spec)[None]
    if isinstance(images, Image.Image):
        return fit_to_spec(images, spec)[None]
    if isinstance(images, np.ndarray):
        return _checked_pixels(_array_pixels(images), spec)
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise DataError(f"image tensors must be uint8 pixels or floats, not {images.dtype}")
        return _checked_pixels(images[None] if images.ndim == 3 else images, spec)
    if isinstance(images, Sequence) and images and not isinstance(images, bytes):
        return torch.cat([as_pixels(image, spec) for image in images])
    raise DataError(
        "images must be a uint8 or float torch tensor, a uint8 NumPy array, a PIL image or an "
        f"image file's path, or a list of them; got {type(images).__name__}"
    )


def _array_pixels(array: np.ndarray) -> torch.Tensor:
    """A NumPy image or batch, (N, H, W, C), (H, W, C) or (H, W), as a (N, C, H, W) tensor."""
    if array.dtype != np.uint8:
        raise DataError(
            f"NumPy images must be uint8 pixels (0-255), not {array.dtype}: convert with "
            "(x * 255).round().astype(np.uint8), or pass a float torch tensor in the model's range"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise DataError(f"a NumPy image is (H, W, C) or a batch (N, H, W, C), not {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _checked_pixels(pixels: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    _check_shape(pixels, spec)
    return pixels


def _checked_floats(
    images: torch.Tensor, spec: DataSpec, value_range: tuple[float, float]
) -> torch.Tensor:
    images = images[None] if images.ndim == 3 else images
    _check_shape(images, spec)
    low, high = value_range
    if images.numel() and not (images.min() >= low - 1e-3 and images.max() <= high + 1e-3):
        raise DataError(
            f"float images are taken to be in the model's value range [{low:g}, {high:g}]; these "
            f"span [{float(images.min()):g}, {float(images.max()):g}]: pass uint8 pixels instead"
        )
    return images.float()


def _check_shape(images: torch.Tensor, spec: DataSpec) -> None:
    expected = (spec.channels, spec.height, spec.width)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
        shape = ", ".join(map(str, expected))
        raise DataError(f"expected images of shape (N, {shape}), got {tuple(images.shape)}")


def _check_images(plugin: ModelPlugin, images: object, count: int, spec: DataSpec) -> None:
    expected = (count, spec.channels, spec.height, spec.width)
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise PluginError(f"{plugin.name} returned images of shape {got}, expected {expected}")


def _count(value: int, name: str, *, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise GentoolError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return value


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
