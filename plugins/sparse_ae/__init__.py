"""Sparse AE: one layer of sigmoid hidden units, as wide as you like, kept mostly silent by a
sparsity penalty (Ng, CS294A lecture notes "Sparse autoencoder"; notes §1.3.2). This module is what
`gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # MLPs flatten the image, so any size works; the first layer has C·H·W inputs (3072 at 32×32).
    image_size: int = option(32, "side of the square images (any size of 4 or more)", min=4)
    code_dim: int = option(
        1024, "p, sigmoid hidden units; may exceed C·H·W, the penalty keeps them sparse", min=1
    )
    sparsity: Literal["kl", "l1"] = option(
        "kl",
        "penalty: kl, Σ_j KL(rho ‖ rho_hat_j) with rho_hat_j unit j's mean activation over the "
        "batch; l1, Σ_j |h_j| per image",
    )
    rho: float = option(
        0.05,
        "target mean activation of each hidden unit, strictly between 0 and 1 (kl only; Ng's 0.05)",
        min=0,
        max=1,
    )
    beta: float = option(3.0, "β, weight of the sparsity penalty (Ng's 3)", min=0)
    loss: Literal["mse", "bce"] = option(
        "mse", "reconstruction loss, summed over pixels: mse, or bce (pixels in [0, 1])"
    )
    lr: float = option(1e-3, "Adam learning rate", min=0)

    def __post_init__(self) -> None:
        if self.sparsity == "kl" and not 0 < self.rho < 1:
            raise ValueError(f"rho must lie strictly between 0 and 1 for KL, got {self.rho}")


def build(config: Config, spec: DataSpec):
    from gentool.plugins.sparse_ae.model import SparseAE

    return SparseAE(config, spec)


plugin = ModelPlugin(
    name="sparse-ae",
    summary="Sparse autoencoder: sigmoid hidden units kept near a target mean activation rho "
    "by a KL penalty (Ng, CS294A)",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "code_dim": 16},
)
