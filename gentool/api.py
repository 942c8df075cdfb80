"""The gentool plugin API, version 1.2: the one module a model plugin imports from gentool.

A plugin is a pip package that declares an entry point in the group ``gentool.models``::

    [project.entry-points."gentool.models"]
    mymodel = "gentool_mymodel:plugin"

The entry point resolves to a `ModelPlugin`. The plugin's top module must not import torch (that
keeps `gentool --help`, `gentool list` and completion fast however many plugins are installed):
torch is imported inside `build`. Nothing in this module imports torch either.

`build(config, spec)` returns a `torch.nn.Module` that owns its math, as described by
`GenerativeModel`: its optimizers, its training step, and sampling.

Compatibility: `api_version` says which major version of this API a plugin was written for (1).
gentool refuses versions it does not support, naming the plugin's distribution and what to
upgrade. The API only grows by optional members with defaults, so a plugin written for 1.0 works
unchanged with 1.1 (`API_REVISION`), which added: labels for conditional models' `encode` and
`reconstruct`; integer (discrete) codes; `TrainContext.all_reduce`; a model's own evaluation
metrics (`evaluation_metrics`); `Capabilities.baseline_sampler`; `ModelPlugin.test_configs` and
`ModelPlugin.capabilities_for`; 1.2 added `ModelPlugin.older_run_defaults`.

Labels: a conditional model (`Capabilities.conditional`) is given `labels`, (B,) int64 class
indexes on its device, in every call gentool makes: `batch.labels` in training, and `labels=` to
`sample`, `sample_latent`, `encode`, `decode` and `reconstruct`. Other models get `labels=None`
in `sample` and `sample_latent`, and no `labels` argument at all in `encode`, `decode` and
`reconstruct`, whose one-argument form (`encode(x)`) is enough for them.

Codes: `encode` returns (B, ...) float32 codes, or int64 indexes for discrete codes (a VQ-VAE's
codebook entries); `gentool encode` stores them in their dtype, and `decode` takes back what
`encode` and `sample_latent` return. Discrete codes cannot be interpolated: `gentool interpolate`
says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from gentool.config import ConfigField, config_fields, option, parse_config
from gentool.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "API_REVISION",
    "API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "AutoencodingModel",
    "Batch",
    "Capabilities",
    "ConfigError",
    "ConfigField",
    "DataSpec",
    "GenerativeModel",
    "LatentModel",
    "ModelPlugin",
    "Phase",
    "TrainContext",
    "option",
]

API_VERSION = 1
API_REVISION = "1.2"  # the version of this API that this gentool implements, major.minor
SUPPORTED_API_VERSIONS = frozenset({1})


@dataclass(frozen=True)
class Capabilities:
    """What a model can do beyond training; commands and conformance checks follow these flags."""

    sample: bool = False  # generates new images: `gentool sample`
    reconstruct: bool = False  # maps an image to its reconstruction: `gentool reconstruct`
    encode: bool = False  # maps an image to a code vector: `gentool encode`
    conditional: bool = False  # needs class labels to train and can sample a chosen class
    # API 1.1: `sample` draws from a stand-in for a learned prior (uniform random codes of a
    # VQ-VAE without its autoregressive prior): `gentool eval` and `info` say that FID and the
    # other sampling metrics measure that baseline.
    baseline_sampler: bool = False


@dataclass(frozen=True)
class DataSpec:
    """The shape of the training data, as the model is built for it."""

    channels: int
    height: int
    width: int
    class_names: tuple[str, ...] = ()  # empty when the data has no labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Batch:
    """One training batch on the training device.

    `images` is (B, C, H, W) float32, already scaled to the plugin's `value_range`;
    `labels` is (B,) int64 class indexes into `DataSpec.class_names`, or None without labels.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None


@dataclass(frozen=True)
class ModelPlugin:
    """What an entry point in ``gentool.models`` resolves to.

    Images are resized to a config field named `image_size` when the config has one; otherwise the
    data is used at its own (uniform) size.
    """

    name: str
    summary: str
    Config: type  # a dataclass whose fields are declared with `option()`
    # (config, spec) -> torch.nn.Module; imports torch. A ValueError says that the config and the
    # data do not fit together (a grayscale-only model on RGB data, say): gentool shows its message.
    build: Callable[[Any, DataSpec], Any]
    capabilities: Capabilities = field(default_factory=Capabilities)
    value_range: tuple[float, float] = (-1.0, 1.0)  # the data layer scales pixels into this range
    # How `sample_latent` draws codes, in words ("standard normal"), for those who use an exported
    # decoder without gentool; None leaves its description silent on it.
    latent_distribution: str | None = None
    default_batch_size: int = 64
    api_version: int = API_VERSION
    # A tiny configuration (a few thousand parameters, small images) that the conformance kit
    # builds and trains on the CPU in a moment.
    test_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # API 1.1: more tiny configurations the kit checks each as well (the variants whose code
    # differs: an EMA codebook and a learned one, say).
    test_configs: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    # API 1.1: the capabilities of a config, when they depend on it (a VQ-VAE samples only with
    # a prior to sample from, say); None means `capabilities` whatever the config. It must not
    # import torch: `gentool info` and the commands call it before building the model.
    capabilities_for: Callable[[Any], Capabilities] | None = None
    # API 1.2: for options added to a released plugin, the value that runs trained before them
    # had in effect. A run's run.json lacks such an option, and today's default may build a
    # different model (an extra layer, say): the run is read with this value instead.
    older_run_defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def parse_config(self, values: Mapping[str, Any] | None = None) -> Any:
        """The config from user values over the defaults; a ConfigError names what is wrong."""
        return parse_config(self.Config, values or {}, owner=self.name)

    def parse_recorded_config(self, recorded: Mapping[str, Any]) -> Any:
        """The config a run recorded in its run.json, with `older_run_defaults` for the options
        it predates."""
        return self.parse_config({**self.older_run_defaults, **recorded})

    def config_fields(self) -> tuple[ConfigField, ...]:
        return config_fields(self.Config)

    def for_config(self, config: Any) -> ModelPlugin:
        """This plugin with the capabilities of `config` (see `capabilities_for`)."""
        if self.capabilities_for is None:
            return self
        return replace(self, capabilities=self.capabilities_for(config))


@dataclass(frozen=True)
class Phase:
    """One stage of a model's training, for greedy layer-wise schemes (pretrain, then fine-tune).

    A model that defines `phases()` is trained phase after phase, each for its `epochs`; the
    progress display names the phase, `ctx.phase` tells the training step which one it is in,
    and a run resumes mid-phase. In automatic optimisation the phase names the optimizer (a key
    of `configure_optimizers`) that the trainer steps; None means the model's only one.
    """

    name: str
    epochs: int
    optimizer: str | None = None


class TrainContext(Protocol):
    """What the trainer lends a model's `training_step`.

    Attributes: `optimizers` (name → optimizer, as `configure_optimizers` returned them),
    `device`, `epoch` (from 0), `global_step` (optimisation steps completed before this one) and
    `phase` (the current Phase's name, for models that define phases()).

    In manual optimisation (GANs) the step alternates its optimizers itself, but goes through
    `backward` and `step` so that gradient scaling and distributed training stay in the trainer.
    """

    optimizers: Mapping[str, torch.optim.Optimizer]
    device: torch.device
    epoch: int
    global_step: int
    phase: str | None

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self, name: str) -> None: ...

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """API 1.1: `tensor` summed ("sum") or averaged ("mean") over the training processes,
        in place, and returned; itself in a single process.

        Gradients are averaged by the trainer; a buffer that `training_step` updates itself (an
        EMA codebook's counts and sums, say) is not: each process would update it from its own
        share of the batch, and the trainer keeps rank 0's after each step. Reduce the
        statistics such an update is made of (sum the counts and sums, then update) and a run in
        N processes updates the buffer as one process would from the whole batch.
        """
        ...


class GenerativeModel(Protocol):
    """The `torch.nn.Module` that `ModelPlugin.build` returns.

    Optional: `phases() -> list[Phase]` for training in stages (see `Phase`).

    Automatic optimisation (the default): `configure_optimizers` returns one optimizer and
    `training_step` returns a dict with a scalar "loss"; the trainer zeroes the gradients,
    back-propagates and steps. Manual optimisation (`manual_optimization = True`): the step uses
    `ctx.optimizers`, `ctx.backward` and `ctx.step` itself. Either way the returned dict holds the
    scalars to log. Models draw their randomness from torch's generators so that a seed (and a
    resumed run) reproduces them.
    """

    manual_optimization: bool

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]: ...

    def evaluation_metrics(
        self, images: torch.Tensor, *, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Optional (API 1.1): the model's own metrics on real images (B, C, H, W) in its value
        range (codebook perplexity, bits per dimension), scalar tensors by name.

        `gentool eval` and `train --eval-every` call it in eval mode without gradients on
        batches of up to 250 held-out images and report each value's mean over the batches,
        weighted by their sizes, beside FID and the others."""
        ...

    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) float images in the plugin's value range (needs `capabilities.sample`).

        Conditional models take `labels`, (n,) class indexes."""
        ...


class LatentModel(Protocol):
    """Optional members of a generative model that `gentool interpolate` walks through."""

    def sample_latent(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(n, ...) codes from the model's prior."""
        ...

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in the plugin's value range from codes."""
        ...


class AutoencodingModel(Protocol):
    """Members a model has when its capabilities say `reconstruct` and `encode`.

    Conditional models take `labels`, (B,) class indexes, and are always given them; other
    models are called with `x` alone."""

    def reconstruct(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) reconstructions of images in the plugin's value range."""
        ...

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, ...) codes of images in the plugin's value range: float32, or int64 indexes
        for discrete codes."""
        ...
