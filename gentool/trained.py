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

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from gentool.api import Capabilities, DataSpec
from gentool.arguments import count_argument, seed_argument, whole_number
from gentool.checkpoint import RunFolder
from gentool.data import to_uint8
from gentool.devices import resolve_device
from gentool.errors import CapabilityError, GentoolError, PluginError
from gentool.image_inputs import ImageInput, model_inputs
from gentool.limits import check_allocation
from gentool.model_calls import (
    call_decode,
    call_encode,
    call_reconstruct,
    call_sample_latent,
    check_images,
)
from gentool.models import load_trained, plugin_for_config
from gentool.record import RunRecord
from gentool.registry import PluginEntry, resolve
from gentool.sampling import device_of, draw, evaluating
from gentool.walks import Interpolation, halves, walk_fractions, walk_point

Output = Literal["uint8", "float"]
BATCH = 256  # images a call of the model's encode/reconstruct: bounds the memory of large inputs
LABEL_ARGUMENTS = "label= (one class for all) or labels= (one per image)"


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
        config = run.read_config(entry.plugin, record)
        self.plugin = plugin_for_config(entry.plugin, config)
        self.entry, self.module = entry, module
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
        count = self._images_that_fit(count_argument(n, "n"))
        images = draw(
            self.module, self.plugin, self.spec, count, seed=seed_argument(seed),
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
        index = whole_number(label)
        if index is None and isinstance(label, str) and label.isdigit():
            index = int(label)
        if index is None or not 0 <= index < len(names):
            listed = ", ".join(f"{position}={name}" for position, name in enumerate(names))
            raise GentoolError(f"unknown {called} {label!r}; the classes are {listed}")
        return index

    def encode(
        self,
        images: ImageInput,
        *,
        label: str | int | None = None,
        labels: Sequence[str | int] | torch.Tensor | None = None,
        batch_size: int = BATCH,
    ) -> torch.Tensor:
        """The codes of `images`, (N, ...) as the model makes them: floats, or int64 indexes
        for discrete codes. Conditional models encode each image with its class: `label` for
        all, or one per image in `labels`."""
        self._require(self.capabilities.encode, "encode images")
        inputs = self.model_inputs(images)
        class_labels = self._given_labels(inputs.shape[0], label, labels)
        return self._batched("encode", inputs, class_labels, batch_size)

    def _given_labels(
        self,
        count: int,
        label: str | int | None,
        labels: Sequence[str | int] | torch.Tensor | None,
    ) -> torch.Tensor | None:
        """The labels a caller gave for `count` images; None when it gave none (a conditional
        model then says which argument it needs)."""
        if label is None and labels is None and self.capabilities.conditional:
            return None
        return self.class_labels(count, label, labels)

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
        """Codes as encode returns them, on the model's device: floats as float32, discrete
        (integer) codes as they are."""
        if (
            not isinstance(codes, torch.Tensor)
            or codes.ndim < 2
            or codes.dtype == torch.bool
            or codes.is_complex()
        ):
            raise GentoolError(
                "codes must be a tensor (N, ...) of floats, or of integers for discrete codes, "
                "as encode returns them"
            )
        prior = self._prior_code()
        if prior is not None and tuple(codes.shape[1:]) != prior.shape[1:]:
            expected = ", ".join(map(str, prior.shape[1:]))
            raise GentoolError(
                f"codes of shape {tuple(codes.shape)} do not fit {self.name}, whose codes are "
                f"(N, {expected})"
            )
        if prior is not None and codes.is_floating_point() != prior.is_floating_point():
            raise GentoolError(
                f"codes must be a {'float' if prior.is_floating_point() else 'integer'} tensor "
                f"for {self.name}, whose codes are {prior.dtype}; got {codes.dtype}"
            )
        self._images_that_fit(codes.shape[0])
        if not codes.is_floating_point():
            return codes.to(self.device)
        if not bool(torch.isfinite(codes).all()):
            raise GentoolError("codes hold values that are not finite (NaN or infinity)")
        return codes.to(self.device, torch.float32)

    def code_shape(self) -> tuple[int, ...] | None:
        """The shape of one code, as the model's prior draws it; None for models without one."""
        prior = self._prior_code()
        return None if prior is None else tuple(prior.shape[1:])

    def _prior_code(self) -> torch.Tensor | None:
        """One code (1, ...) of the model's prior; None for models without one."""
        if not hasattr(self.module, "sample_latent"):
            return None
        generator = torch.Generator(device=self.device).manual_seed(0)
        labels = self.class_labels(1)
        with evaluating(self.module):
            one = call_sample_latent(
                self.module, self.plugin, 1, generator=generator,
                labels=None if labels is None else labels.to(self.device),
            )  # fmt: skip
        return one

    def reconstruct(
        self,
        images: ImageInput,
        *,
        label: str | int | None = None,
        labels: Sequence[str | int] | torch.Tensor | None = None,
        output: Output = "uint8",
        batch_size: int = BATCH,
    ) -> torch.Tensor:
        """Each image passed through the model and back; conditional models with its class,
        `label` for all or one per image in `labels`."""
        self._require(self.capabilities.reconstruct, "reconstruct images")
        inputs = self.model_inputs(images)
        class_labels = self._given_labels(inputs.shape[0], label, labels)
        reconstructions = self._batched("reconstruct", inputs, class_labels, batch_size)
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
        or, given `start` and `end` images, their codes (one row).

        Conditional models walk within `label`'s class; without it, random pairs take the
        classes in turn, and two image files each their class folder's (`faces/smiling/a.png`
        is of class "smiling"), the first half of the walk in the first image's class."""
        self._require(hasattr(self.module, "decode"), "decode codes into images, so it cannot walk")
        if method not in ("lerp", "slerp"):
            raise GentoolError(f"method must be lerp or slerp, got {method!r}")
        steps, rows = count_argument(steps, "steps", least=2), count_argument(rows, "rows")
        self._images_that_fit(steps * rows)
        if (start is None) != (end is None):
            raise GentoolError("start and end go together: give both images or neither")
        if start is not None:
            if rows != 1:
                raise GentoolError("rows is for walks between random codes; two images make one")
            ends = [self._one_code(image, called, label) for image, called in
                    ((start, "start"), (end, "end"))]  # fmt: skip
            (first, first_label), (last, last_label) = ends
            row_labels = halves(first_label, last_label, steps)
        else:
            first, last, class_labels = self._prior_pairs(rows, seed_argument(seed), label)
            row_labels = None if class_labels is None else class_labels.repeat_interleave(steps)
        if not (first.is_floating_point() and last.is_floating_point()):
            raise CapabilityError(
                f"{self.name}'s codes are {first.dtype} indexes (discrete codes): there is "
                "nothing between two of them to walk through"
            )
        walk = torch.stack([walk_point(first, last, t, method) for t in walk_fractions(steps)], 1)
        flat = walk.flatten(0, 1)  # (rows·steps, ...): row by row
        images = self._decoded(flat, row_labels)
        return self._output(images, output).unflatten(0, (walk.shape[0], steps))

    def _one_code(
        self, image: ImageInput, called: str, label: str | int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The code of one image, and its class for conditional models: `label`, else the
        class its folder names."""
        class_labels = None
        if self.capabilities.conditional:
            chosen = label if label is not None else self.folder_class(image)
            if chosen is None:
                raise GentoolError(
                    f"{self.name} is conditional: say which class {called} is of with label=, "
                    "or take the image from a folder named after its class"
                )
            class_labels = self.class_labels(1, chosen)
        codes = self.encode(image, labels=class_labels)
        if codes.shape[0] != 1:
            raise GentoolError(f"{called} is one image; got {codes.shape[0]}")
        return codes, class_labels

    def folder_class(self, image: ImageInput) -> str | None:
        """The class an image file's folder names, as a folder dataset's classes are named."""
        if isinstance(image, (str, os.PathLike)):
            folder = Path(image).parent.name
            if folder in self.class_names:
                return folder
        return None

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
        with evaluating(self.module):
            first, last = (
                call_sample_latent(
                    self.module, self.plugin, rows, labels=on_device, generator=generator
                )
                for _ in range(2)
            )
        return first, last, class_labels

    def _decoded(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        on_device = None if labels is None else labels.to(self.device)
        with evaluating(self.module):
            images = call_decode(
                self.module, self.plugin, codes, labels=on_device, supplied_by=LABEL_ARGUMENTS
            )
        check_images(self.plugin, images, (codes.shape[0], *self._image_shape), "decode")
        return images

    def _batched(
        self,
        method: str,
        inputs: torch.Tensor,
        labels: torch.Tensor | None,
        batch_size: int,
    ) -> torch.Tensor:
        call = call_encode if method == "encode" else call_reconstruct
        outputs = []
        batch_size = count_argument(batch_size, "batch_size")
        with evaluating(self.module):
            for start in range(0, inputs.shape[0], batch_size):
                batch = inputs[start : start + batch_size].to(self.device)
                batch_labels = None if labels is None else labels[start : start + batch_size]
                result = call(
                    self.module, self.plugin, batch, supplied_by=LABEL_ARGUMENTS,
                    labels=None if batch_labels is None else batch_labels.to(self.device),
                )  # fmt: skip
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
