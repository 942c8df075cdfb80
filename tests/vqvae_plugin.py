"""A VQ-VAE (van den Oord et al. 2017, arXiv:1711.00937) as an outside author writes it: integer
codes, a codebook learned by its loss or by exponential moving averages (the paper's appendix
A.1), the codebook's perplexity as its own evaluation metric, and uniform random codes as a
baseline sampler. Installed as a fake distribution by the tests that use it.
"""

SOURCE = """
from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(8, "side of the square images", min=4)
    codes: int = option(16, "entries of the codebook", min=2)
    code_dim: int = option(4, "length of each codebook entry", min=1)
    codebook: Literal["ema", "loss"] = option(
        "ema", "how the codebook learns: moving averages (ema) or ||sg[z_e] - e||^2 (loss)"
    )
    decay: float = option(0.9, "the moving averages' decay (codebook ema)", min=0, max=0.999)
    commitment: float = option(0.25, "weight beta of the commitment loss", min=0)
    lr: float = option(1e-2, "Adam learning rate", min=0)
    sampler: Literal["uniform", "none"] = option(
        "uniform", "what sample draws: uniform random codes (a baseline), or none: no sampling"
    )


def build(config, spec):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class VQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv2d(spec.channels, config.code_dim, 4, 2, 1)  # (B, D, H/2, W/2)
            self.decoder = nn.ConvTranspose2d(config.code_dim, spec.channels, 4, 2, 1)
            codebook = torch.randn(config.codes, config.code_dim)
            if config.codebook == "ema":  # updated in training_step, not by an optimizer
                self.register_buffer("codebook", codebook)
                self.register_buffer("cluster_size", torch.ones(config.codes))
                self.register_buffer("embed_sum", codebook.clone())
            else:
                self.codebook = nn.Parameter(codebook)

        def configure_optimizers(self):
            return {"vqvae": torch.optim.Adam(self.parameters(), lr=config.lr)}

        def _nearest(self, z_e):
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, config.code_dim)  # (B·h·w, D)
            indexes = torch.cdist(flat, self.codebook).argmin(dim=1)
            return flat, indexes.view(z_e.shape[0], *z_e.shape[2:])  # (B, h, w)

        def _quantized(self, indexes):
            return self.codebook[indexes].permute(0, 3, 1, 2)  # (B, D, h, w)

        def training_step(self, batch, ctx):
            z_e = self.encoder(batch.images)
            flat, indexes = self._nearest(z_e)
            z_q = self._quantized(indexes)
            commitment = F.mse_loss(z_e, z_q.detach())
            loss = F.mse_loss(self.decoder(z_e + (z_q - z_e).detach()).sigmoid(), batch.images)
            loss = loss + config.commitment * commitment
            if config.codebook == "ema":
                self._update_codebook(flat.detach(), indexes.flatten(), ctx)
            else:
                loss = loss + F.mse_loss(z_q, z_e.detach())
            return {"loss": loss, "commitment": commitment.detach()}

        @torch.no_grad()
        def _update_codebook(self, flat, indexes, ctx):
            onehot = F.one_hot(indexes, config.codes).type(flat.dtype)  # (B·h·w, K)
            # Counts and sums of the whole batch, over every process, before the averages.
            counts = ctx.all_reduce(onehot.sum(0))
            sums = ctx.all_reduce(onehot.T @ flat)
            self.cluster_size.mul_(config.decay).add_(counts, alpha=1 - config.decay)
            self.embed_sum.mul_(config.decay).add_(sums, alpha=1 - config.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + 1e-5) / (total + config.codes * 1e-5) * total
            self.codebook.copy_(self.embed_sum / smoothed[:, None])

        def encode(self, x):
            return self._nearest(self.encoder(x))[1]  # (B, h, w) int64

        def decode(self, indexes):
            return self.decoder(self._quantized(indexes)).sigmoid()

        def reconstruct(self, x):
            return self.decode(self.encode(x))

        def sample_latent(self, n, *, labels=None, generator=None):
            side = spec.height // 2
            return torch.randint(config.codes, (n, side, side), generator=generator)

        def sample(self, n, *, labels=None, generator=None):
            return self.decode(self.sample_latent(n, generator=generator))

        def evaluation_metrics(self, images):
            used = F.one_hot(self.encode(images).flatten(), config.codes).float().mean(0)
            entropy = -(used * torch.log(used + 1e-10)).sum()
            return {"perplexity": entropy.exp()}

    return VQVAE()


def capabilities_for(config):
    samples = config.sampler == "uniform"
    return Capabilities(sample=samples, reconstruct=True, encode=True, baseline_sampler=samples)


plugin = ModelPlugin(
    name="vqvae",
    summary="VQ-VAE: integer codes, a codebook learned by EMA or by its loss",
    Config=Config,
    build=build,
    capabilities=capabilities_for(Config()),
    capabilities_for=capabilities_for,
    value_range=(0.0, 1.0),
    test_config={"image_size": 8, "codes": 8},
    test_configs=(
        {"image_size": 8, "codes": 8, "codebook": "loss"},
        {"image_size": 8, "codes": 8, "sampler": "none"},
    ),
)
"""
