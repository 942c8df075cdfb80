"""Exporting a run's network as a file that runs without gentool: ONNX, torch.export, TorchScript.

The part exported is a small module with a fixed signature around the plugin's own methods: the
decoder, `decode(latent, labels=)` (a GAN's generator), or the encoder, `encode(images)`, with a
dynamic batch size. A file is written only once it has been checked: its bytes, held in memory,
are loaded back as its users will load them, run on a batch of another size than the one traced,
and compared with the model; the bytes that passed are the ones written (so gentool never loads a
file from disk that could have been swapped). A JSON description beside it says what goes in and
what comes out.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import sys
import sysconfig
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gentool import __version__
from gentool.api import DataSpec, ModelPlugin
from gentool.atomic import atomic_write, write_text
from gentool.errors import CapabilityError, GentoolError, describe_exception
from gentool.export_parts import (
    ConditionalDecoderNetwork,
    ConditionalEncoderNetwork,
    DecoderNetwork,
    EncoderNetwork,
    PartNetwork,
)
from gentool.kernels.dispatch import use_backend
from gentool.model_calls import takes_labels
from gentool.models import calling
from gentool.registry import PluginEntry, strict_plugins
from gentool.run_files import file_output_path
from gentool.trained import TrainedModel

# Each format, with how its users load it (said in the description).
FORMATS = {
    "onnx": "onnxruntime.InferenceSession(path)",
    "exported": "torch.export.load(path).module()",
    "torchscript": "torch.jit.load(path)",
}
PARTS = ("decoder", "encoder")
ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx writes its graph with onnxscript
EXTRA = 'pip install "gentool[export]"'
TRACED_BATCH = 2  # torch.export takes a size of 1 for a constant: the batch would be fixed
CHECKED_BATCH = 3  # not the traced size: a file whose batch was fixed fails its check
CHECK_SEED = 0
# Another runtime's kernels add in another order: float32 rounding of about 1e-6 of the output's
# scale. A ten-thousandth leaves room for deep networks and stays far below an 8-bit pixel step.
RELATIVE_TOLERANCE = 1e-4
# Packages whose lines in a traceback are the exporters' own, not the model's.
EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript", "onnx_ir", "onnxruntime")


@dataclass(frozen=True)
class Plan:
    """A part to export, the inputs it is traced and checked with, and what its values mean."""

    network: PartNetwork
    traced: tuple[torch.Tensor, ...]
    checked: tuple[torch.Tensor, ...]  # a batch of CHECKED_BATCH
    expected: torch.Tensor  # the model's own output on `checked`
    input_notes: tuple[dict[str, Any], ...]  # one per input, for the description
    output_notes: dict[str, Any]


@dataclass(frozen=True)
class Check:
    """How an exported file compared with the model."""

    runtime: str  # what loaded and ran the file
    difference: float | None  # the largest |file − model|; None when the file could not be run
    tolerance: float
    not_run: str | None = None  # why the file was not run, when it was not

    def as_dict(self) -> dict[str, Any]:
        shown = {"runtime": self.runtime, "batch": CHECKED_BATCH}
        shown |= {"max_abs_difference": self.difference, "tolerance": self.tolerance}
        return shown | ({"not_run": self.not_run} if self.not_run else {})


@dataclass(frozen=True)
class Exported:
    path: Path
    description_path: Path
    description: dict[str, Any]
    check: Check
    seconds: float  # exporting and checking


def export_part(
    entry: PluginEntry,
    *,
    part: str,
    export_format: str,
    out: Path,
    run_dir: Path | None = None,
    raw_weights: bool = False,
) -> Exported:
    """Export a run's decoder (or encoder) to `out` in `export_format`, checked against the model
    on the CPU, and describe it in `out` + ".json"; on any failure neither file is written."""
    plugin = entry.plugin
    assert plugin is not None  # the registry resolves loaded plugins only
    _check_request(plugin, part, export_format)
    out, description_path = _export_paths(Path(out))
    trained = TrainedModel.from_run(entry, run_dir, torch.device("cpu"), averaged=not raw_weights)
    # Exporters keep the weights as constants, which take no gradients.
    trained.module.requires_grad_(False)
    what = f"{plugin.name}'s {part} to {export_format}"
    started = time.perf_counter()
    with use_backend("torch"), torch.no_grad(), _quiet_exporters():
        plan = _plan(plugin, trained.module, trained.spec, part)
        with _exporter_errors(what):
            content = _serialize(export_format, plan)
        with _exporter_errors(what, f"the file fails on a batch of {CHECKED_BATCH}: "):
            output, runtime = _run_serialized(export_format, content, plan)
        check = _compare(what, output, runtime, plan.expected)
    with atomic_write(out, make_parents=True) as temporary:
        temporary.write_bytes(content)
    seconds = time.perf_counter() - started
    description = _description(plugin, trained.spec, part, export_format, out, plan, check)
    description["trained"] = _training_of(trained)
    write_text(description_path, json.dumps(description, indent=2) + "\n")
    return Exported(out, description_path, description, check, seconds)


def _export_paths(given: Path) -> tuple[Path, Path]:
    """Where the file and its description go: regular files, checked before anything is
    written, so that a description that cannot be written leaves the model file as it was."""
    out = file_output_path(given)
    description = file_output_path(given.with_name(f"{given.name}.json"), "--out's description")
    return out, description


def _check_request(plugin: ModelPlugin, part: str, export_format: str) -> None:
    if export_format not in FORMATS:
        raise GentoolError(f"--format must be one of {', '.join(FORMATS)}; got {export_format!r}")
    if part not in PARTS:
        raise GentoolError(f"--part must be decoder or encoder; got {part!r}")
    if part == "encoder" and not plugin.capabilities.encode:
        raise CapabilityError(
            f"{plugin.name} does not encode images, so it has no encoder to export; its "
            "decoder can be (--part decoder)"
        )
    if export_format == "onnx":
        missing = [name for name in ONNX_PACKAGES if not _importable(name)]
        if missing:
            raise GentoolError(
                f"--format onnx needs {' and '.join(missing)}, not installed here: {EXTRA}"
            )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _plan(plugin: ModelPlugin, model: nn.Module, spec: DataSpec, part: str) -> Plan:
    generator = torch.Generator().manual_seed(CHECK_SEED)
    output_notes: dict[str, Any] = {}
    if part == "encoder":
        network, draw, input_notes = _encoder(plugin, model, spec, generator)
    else:
        network, draw, input_notes = _decoder(plugin, model, spec, generator)
        output_notes = {"value_range": list(plugin.value_range)}
    traced, checked = draw(TRACED_BATCH), draw(CHECKED_BATCH)
    with calling(plugin, "encode" if part == "encoder" else "decode"):
        expected = network(*checked)
    return Plan(network, traced, checked, expected, input_notes, output_notes)


def _encoder(
    plugin: ModelPlugin, model: nn.Module, spec: DataSpec, generator: torch.Generator
) -> tuple[PartNetwork, Callable[[int], tuple[torch.Tensor, ...]], tuple[dict[str, Any], ...]]:
    """The encoder network, how to draw a batch of its inputs, and what their values mean: a
    conditional model's encoder takes the images' labels too (unless written for API 1.0)."""
    low, high = plugin.value_range
    image_notes = {"value_range": [low, high]}

    def images(n: int) -> torch.Tensor:
        shape = (n, spec.channels, spec.height, spec.width)
        return torch.rand(shape, generator=generator) * (high - low) + low

    if not (plugin.capabilities.conditional and takes_labels(model.encode)):
        return EncoderNetwork(model), lambda n: (images(n),), (image_notes,)

    def labelled_images(n: int) -> tuple[torch.Tensor, ...]:
        return images(n), torch.arange(n) % spec.num_classes  # every class, in turn

    label_notes = {"values": f"class indexes from 0 to {spec.num_classes - 1} into class_names"}
    return ConditionalEncoderNetwork(model), labelled_images, (image_notes, label_notes)


def _decoder(
    plugin: ModelPlugin, model: nn.Module, spec: DataSpec, generator: torch.Generator
) -> tuple[PartNetwork, Callable[[int], tuple[torch.Tensor, ...]], tuple[dict[str, Any], ...]]:
    """The decoder network, how to draw a batch of its inputs, and what their values mean."""
    if not callable(getattr(model, "decode", None)):
        instead = "; its encoder can be (--part encoder)" if plugin.capabilities.encode else ""
        raise CapabilityError(
            f"{plugin.name} has no decode(codes) method, so it has no decoder to export{instead}"
        )
    draw_latent, distribution = _latent_source(plugin, model, spec)
    latent_notes = {"distribution": distribution}
    if not plugin.capabilities.conditional:
        return DecoderNetwork(model), lambda n: (draw_latent(n, None, generator),), (latent_notes,)

    def draw(n: int) -> tuple[torch.Tensor, ...]:
        labels = torch.arange(n) % spec.num_classes  # every class, in turn
        return draw_latent(n, labels, generator), labels

    label_notes = {"values": f"class indexes from 0 to {spec.num_classes - 1} into class_names"}
    return ConditionalDecoderNetwork(model), draw, (latent_notes, label_notes)


def _latent_source(
    plugin: ModelPlugin, model: nn.Module, spec: DataSpec
) -> tuple[Callable[..., torch.Tensor], str | None]:
    """How to draw codes for the decoder, and how its users should: from the model's prior, or,
    for an autoencoder, codes of the shape its encoder gives."""
    if callable(getattr(model, "sample_latent", None)):

        def from_prior(n: int, labels: torch.Tensor | None, generator: torch.Generator):
            with calling(plugin, "sample_latent"):
                return model.sample_latent(n, labels=labels, generator=generator)

        return from_prior, plugin.latent_distribution
    if plugin.capabilities.encode:

        def like_codes(n: int, labels: torch.Tensor | None, generator: torch.Generator):
            """Codes of random images: of the dtype and range the decoder takes (integer
            indexes into a codebook, say), which random numbers would not be."""
            encoder, draw_images, _ = _encoder(plugin, model, spec, generator)
            with calling(plugin, "encode"):
                return encoder(*draw_images(n)).detach()

        return like_codes, "codes of images from the encoder (--part encoder)"
    raise CapabilityError(
        f"{plugin.name} has neither sample_latent(n) nor encode(images), so the codes its decoder "
        "takes have no known shape and it cannot be exported"
    )


def _serialize(export_format: str, plan: Plan) -> bytes:
    """The file's content: `plan`'s network exported in `export_format`."""
    buffer = io.BytesIO()
    if export_format == "torchscript":
        torch.jit.save(torch.jit.trace(plan.network, plan.traced), buffer)
        return buffer.getvalue()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in plan.traced)
    program = torch.export.export(plan.network, plan.traced, dynamic_shapes=dynamic)
    if export_format == "exported":
        torch.export.save(program, buffer)
        return buffer.getvalue()
    # Given the program, the ONNX exporter converts it as it is. The first input's dynamic shape
    # names the batch "batch" in the graph (torch's own name is a symbol such as s81); the other
    # inputs share that dimension, and naming it twice would be warned about.
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        verbose=False,
        dynamic_shapes=(dynamic[0], *[None] * (len(dynamic) - 1)),
        output_names=[plan.network.output_name],
    )
    # One file, weights inside: protobuf refuses a model of over 2 GB, which would need its
    # weights in a second file.
    return onnx_program.model_proto.SerializeToString()


def _run_serialized(
    export_format: str, content: bytes, plan: Plan
) -> tuple[torch.Tensor | None, str]:
    """The file's output on the checked batch, loaded as its users will load it, and what ran
    it; no output where the file cannot be run here."""
    if export_format == "exported":
        output = torch.export.load(io.BytesIO(content)).module()(*plan.checked)
        return output, f"torch.export.load (torch {torch.__version__})"
    if export_format == "torchscript":
        output = torch.jit.load(io.BytesIO(content))(*plan.checked)
        return output, f"torch.jit.load (torch {torch.__version__})"
    if not _importable("onnxruntime"):
        import onnx

        onnx.checker.check_model(content, full_check=True)
        return None, f"onnx.checker (onnx {onnx.__version__})"
    import onnxruntime

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    names = plan.network.input_names
    inputs = {name: tensor.numpy() for name, tensor in zip(names, plan.checked, strict=True)}
    (output,) = session.run([plan.network.output_name], inputs)
    return torch.from_numpy(output), f"onnxruntime {onnxruntime.__version__}"


def _compare(what: str, output: torch.Tensor | None, runtime: str, expected: torch.Tensor) -> Check:
    """The check of a file's output against the model's; an error when they differ."""
    tolerance = RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
    if output is None:
        not_run = f"onnxruntime is not installed ({EXTRA}), so the outputs were not compared"
        return Check(runtime, None, tolerance, not_run)
    if output.shape != expected.shape:
        raise GentoolError(
            f"cannot export {what}: the file's output on a batch of {CHECKED_BATCH} has shape "
            f"{tuple(output.shape)}, the model's {tuple(expected.shape)}"
        )
    difference = (output.double() - expected.double()).abs().max().item()
    if not difference <= tolerance:  # NaN too
        raise GentoolError(
            f"cannot export {what}: the file's output differs from the model's by up to "
            f"{difference:.1e} on a batch of {CHECKED_BATCH}, over the tolerance {tolerance:.1e}"
        )
    return Check(runtime, difference, tolerance)


def _description(
    plugin: ModelPlugin,
    spec: DataSpec,
    part: str,
    export_format: str,
    path: Path,
    plan: Plan,
    check: Check,
) -> dict[str, Any]:
    """What a user of the file needs to know without gentool: the JSON beside it."""
    inputs = [
        {"name": name, **_tensor_shape(tensor), **notes}
        for name, tensor, notes in zip(
            plan.network.input_names, plan.traced, plan.input_notes, strict=True
        )
    ]
    output = {"name": plan.network.output_name, **_tensor_shape(plan.expected)}
    description: dict[str, Any] = {
        "file": path.name,
        "format": export_format,
        "load_with": FORMATS[export_format],
        "model": plugin.name,
        "part": part,
        "inputs": inputs,
        "output": output | plan.output_notes,
    }
    if isinstance(plan.network, ConditionalDecoderNetwork):
        description["class_names"] = list(spec.class_names)
    description["check"] = check.as_dict()
    description["versions"] = {"gentool": __version__, "torch": torch.__version__}
    return description


def _tensor_shape(tensor: torch.Tensor) -> dict[str, Any]:
    """Shape (the batch named "batch") and dtype, as the description says them."""
    shape: list[int | str] = ["batch", *tensor.shape[1:]]
    return {"shape": shape, "dtype": str(tensor.dtype).removeprefix("torch.")}


def _training_of(trained: TrainedModel) -> dict[str, Any]:
    return {
        "run": str(trained.run.path.resolve()),
        "epoch": trained.record.progress.epoch,
        "step": trained.record.progress.global_step,
        "weights": trained.weights,  # "ema": the moving average of a run trained with --ema
    }


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Keep the exporters' logs and prints off the terminal (their failures reach the user as
    one line; torch.export prints the graph it failed on straight to standard error) and make a
    trace that may not generalise an error."""
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            # TorchScript is deprecated in favour of torch.export, yet still what some runtimes
            # load: asked for by name, it is no news to the user.
            warnings.filterwarnings(
                "ignore", r"`torch\.jit\.(trace|save|load)`", DeprecationWarning
            )
            # torch's own code, not the model's, calls an API torch has since deprecated.
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
            # A trace records the one path the traced batch took through Python: a file that
            # computes something else for other inputs is not the model.
            warnings.filterwarnings("error", category=torch.jit.TracerWarning)
            yield
    finally:
        logging.disable(disabled)


@contextmanager
def _exporter_errors(what: str, step: str = "") -> Iterator[None]:
    """An exporter's failure, however long its report, as one line: what was exported, then the
    exporter's reason (GENTOOL_STRICT_PLUGINS=1 lets the failure through whole)."""
    try:
        yield
    except GentoolError:
        raise
    except Exception as error:
        if strict_plugins():
            raise
        raise GentoolError(
            f"cannot export {what}: {step}{_reason(error)}; GENTOOL_STRICT_PLUGINS=1 shows the "
            "exporter's whole report"
        ) from None


def _reason(error: BaseException) -> str:
    """The first line of the innermost exception of `error`'s chain of causes, and the deepest
    line of the model's code on its way, where there is one."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    frames = [frame for link in chain for frame in traceback.extract_tb(link.__traceback__)]
    model_frames = [frame for frame in frames if not _is_exporter_code(frame.filename)]
    where = ""
    if model_frames:
        frame = model_frames[-1]
        where = f" (at {_shown_path(frame.filename)}:{frame.lineno})"
    return describe_exception(chain[-1]) + where


def _is_exporter_code(filename: str) -> bool:
    """Whether a traceback's file is this module's, the exporters' or Python's own."""
    path = os.path.abspath(filename)
    folders = [
        os.path.dirname(module.__file__)
        for name in EXPORTER_PACKAGES
        if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
    ]
    paths = sysconfig.get_paths()
    installed = _inside(path, paths["purelib"]) or _inside(path, paths["platlib"])
    return (
        filename.startswith("<")  # <frozen importlib._bootstrap> and the like
        or path == os.path.abspath(__file__)
        or (_inside(path, paths["stdlib"]) and not installed)
        or any(_inside(path, folder) for folder in folders)
    )


def _inside(path: str, folder: str) -> bool:
    return path.startswith(os.path.join(os.path.abspath(folder), ""))


def _shown_path(filename: str) -> str:
    """`filename` relative to the working folder when it lies inside it."""
    relative = os.path.relpath(os.path.abspath(filename), Path.cwd())
    return filename if relative.startswith(os.pardir) else relative
