"""A model plugin that writes down every call gentool makes into its model, and raises from the
method named in RAISE_IN: the subject of tests that compare the calls of the commands and the
trainer with those of the conformance kit, and that a plugin's exception is one line.

Two plugins: `recorder`, an autoencoder with a prior, and `recorder-cond`, its conditional twin
(encoder and decoder both see the label). The source is installed as a fake distribution
(`tests.conftest.install_fake_distribution`), so it imports no torch at its top.
"""

SOURCE = """
import functools
import os
from dataclasses import dataclass

from gentool.api import Capabilities, ModelPlugin, option

CALLS = []  # (plugin, method, argument kinds, keyword kinds, training, gradients)


@dataclass(frozen=True)
class Config:
    image_size: int = option(8, "side of the square images", min=4)


def _kind(value):
    if value is None:
        return "None"
    if hasattr(value, "is_floating_point"):
        return "float tensor" if value.is_floating_point() else "int tensor"
    if hasattr(value, "images"):
        return f"batch(labels={_kind(value.labels)})"
    if hasattr(value, "manual_seed"):
        return "generator"
    return type(value).__name__ if isinstance(value, (int, str)) else "context"


def _recorded(method):
    @functools.wraps(method)  # inner calls go through __wrapped__, unrecorded
    def call(self, *args, **kwargs):
        import torch

        arguments = tuple(_kind(value) for value in args)
        keywords = tuple(sorted((key, _kind(value)) for key, value in kwargs.items()))
        CALLS.append((self.name, method.__name__, arguments, keywords, self.training,
                      torch.is_grad_enabled()))
        if os.environ.get("RAISE_IN") == method.__name__:
            raise RuntimeError(f"{method.__name__} fell over")
        return method(self, *args, **kwargs)

    return call


def build(config, spec, conditional):
    import torch
    from torch import nn

    if os.environ.get("RAISE_IN") == "build":
        raise RuntimeError("build fell over")
    if os.environ.get("RAISE_IN") == "build-refusal":
        raise ValueError("recorder needs images of at least 16 pixels a side")
    pixels = spec.channels * spec.height * spec.width

    class Recording(nn.Module):
        name = "recorder-cond" if conditional else "recorder"

        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(pixels, 4)
            self.decoder = nn.Linear(4, pixels)
            if conditional:
                self.label_shift = nn.Embedding(spec.num_classes, 4)

        def _shift(self, labels):
            return self.label_shift(labels) if conditional else 0

        # Not recorded (torch calls them too, and the kit need not): they raise on demand only.
        def state_dict(self, *args, **kwargs):
            if os.environ.get("RAISE_IN") == "state_dict":
                raise RuntimeError("state_dict fell over")
            return super().state_dict(*args, **kwargs)

        def load_state_dict(self, *args, **kwargs):
            if os.environ.get("RAISE_IN") == "load_state_dict":
                raise SystemExit(0)  # a plugin does not decide gentool's exit either
            return super().load_state_dict(*args, **kwargs)

        @_recorded
        def configure_optimizers(self):
            return {"all": torch.optim.Adam(self.parameters(), lr=1e-2)}

        @_recorded
        def training_step(self, batch, ctx):
            codes = self.encoder(batch.images.flatten(1)) + self._shift(batch.labels)
            images = self.decoder(codes + self._shift(batch.labels)).sigmoid()
            return {"loss": (images - batch.images.flatten(1)).square().mean()}

        @_recorded
        def sample_latent(self, n, *, labels=None, generator=None):
            return torch.randn(n, 4, generator=generator)

        @_recorded
        def decode(self, z, *, labels=None):
            shape = (z.shape[0], spec.channels, spec.height, spec.width)
            return self.decoder(z + self._shift(labels)).sigmoid().view(shape)

        @_recorded
        def sample(self, n, *, labels=None, generator=None):
            z = torch.randn(n, 4, generator=generator)
            return Recording.decode.__wrapped__(self, z, labels=labels)

        @_recorded
        def encode(self, x, *, labels=None):
            return self.encoder(x.flatten(1)) + self._shift(labels)

        @_recorded
        def evaluation_metrics(self, x, *, labels=None):
            return {"code_norm": Recording.encode.__wrapped__(self, x, labels=labels).norm()}

        @_recorded
        def reconstruct(self, x, *, labels=None):
            codes = Recording.encode.__wrapped__(self, x, labels=labels)
            return Recording.decode.__wrapped__(self, codes, labels=labels)

    return Recording()


CAPABLE = dict(sample=True, reconstruct=True, encode=True)
recorder = ModelPlugin(
    name="recorder", summary="records the calls into it", Config=Config,
    build=lambda config, spec: build(config, spec, conditional=False),
    capabilities=Capabilities(**CAPABLE), value_range=(0.0, 1.0),
)
recorder_cond = ModelPlugin(
    name="recorder-cond", summary="records the calls into it, by class", Config=Config,
    build=lambda config, spec: build(config, spec, conditional=True),
    capabilities=Capabilities(**CAPABLE, conditional=True), value_range=(0.0, 1.0),
)
"""

ENTRY_POINTS = {
    "recorder": "recording_models:recorder",
    "recorder-cond": "recording_models:recorder_cond",
}
