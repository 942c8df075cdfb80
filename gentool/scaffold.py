"""`gentool plugin new`: a ready third-party plugin package, with a small working model.

The package installs an entry point in the ``gentool.models`` group, keeps torch out of its top
module, and tests itself with the conformance kit; its model is a small MLP variational
autoencoder, which a new author replaces with their own.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from gentool import __version__
from gentool.errors import GentoolError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

PYPROJECT = Template("""\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "gentool-$name"
version = "0.1.0"
description = "The $name model for gentool"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["gentool>=$gentool_version"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points."gentool.models"]
$name = "$module:plugin"

[tool.setuptools]
package-dir = { "" = "src" }
packages = ["$module"]
""")

INIT = Template('''\
"""$name: a gentool model plugin.

gentool imports this module to list the model, so it must stay light: torch is imported in
`build`, never at the top of this file (the conformance kit checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(32, "side of the square images the data is resized to", min=4)
    hidden: int = option(256, "width of the hidden layers", min=1)
    latent_dim: int = option(16, "length of the code z", min=1)
    lr: float = option(1e-3, "Adam learning rate", min=0)


def build(config: Config, spec: DataSpec):
    from $module.model import Model

    return Model(config, spec)


plugin = ModelPlugin(
    name="$name",
    summary="A small MLP variational autoencoder (replace with your model)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    latent_distribution="standard normal",
    test_config={"image_size": 8, "hidden": 16, "latent_dim": 4},
)
''')

MODEL = Template('''\
"""The $name model: an MLP variational autoencoder (Kingma & Welling 2013).

gentool's trainer calls `configure_optimizers` once and `training_step` per batch; in this
automatic mode the step returns {"loss": ...} and the trainer back-propagates and steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import reparameterize_kl
from torch import nn

from $module import Config


class Model(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),  # (B, C·H·W)
            nn.Linear(pixels, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 2 * config.latent_dim),  # μ and log σ²
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, pixels),  # pixel logits
        )

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(batch.images).chunk(2, dim=1)
        z, kl = reparameterize_kl(mu, logvar, reduction="mean")
        logits = self.decoder(z).view(-1, *self.image_shape)
        recon = F.binary_cross_entropy_with_logits(logits, batch.images, reduction="sum")
        recon = recon / batch.images.shape[0]
        return {"loss": recon + kl, "recon": recon.detach(), "kl": kl.detach()}

    def sample_latent(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.decode(self.sample_latent(n, generator=generator))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).chunk(2, dim=1)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
''')

TEST = Template('''\
"""gentool's conformance kit: one test per rule of the plugin API (select one with -k)."""

from gentool.testing import parametrize_with_checks

from $module import plugin


@parametrize_with_checks([plugin])
def test_plugin(plugin, check):
    check(plugin)
''')

README = Template("""\
# gentool-$name

A model plugin for gentool: `gentool train $name` trains it like any built-in model.

```sh
pip install -e ".[test]"      # registers the model with gentool
gentool list                  # shows $name
pytest                        # the conformance kit
gentool train $name --epochs 5 && gentool sample $name --n 64
```

The plugin is `src/$module/__init__.py` (name, config, capabilities; no torch import there)
and the model is `src/$module/model.py`.
""")


def write_plugin_package(name: str, folder: Path) -> list[Path]:
    """Write the package for plugin `name` into `folder` (new or empty); return the files."""
    if not NAME_PATTERN.fullmatch(name):
        raise GentoolError(
            f"plugin name {name!r} must be lowercase letters and digits, words joined by '-', "
            "starting with a letter (for example: wgan-gp)"
        )
    if folder.exists() and any(folder.iterdir()):
        raise GentoolError(f"{folder} is not empty: choose a new or empty folder with --dir")
    module = "gentool_" + name.replace("-", "_")
    values = {"name": name, "module": module, "gentool_version": __version__}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/{module}/__init__.py": INIT,
        f"src/{module}/model.py": MODEL,
        "tests/test_plugin.py": TEST,
    }
    written = []
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values), encoding="utf-8")
        written.append(path)
    return written
