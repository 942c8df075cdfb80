"""Deep autoencoder: Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural
networks", Science 313 (2006); course notes §1.3.6.

1. Pretraining. One RBM per width in `hidden`, trained in turn with contrastive divergence (CD-1)
   on the hidden probabilities of the RBM below; the first RBM's data are the pixels. Visible
   units are Bernoulli, and pixels in [0, 1] serve as their probabilities, as the paper does for
   MNIST. Hidden units are Bernoulli, except in the top RBM: its hidden units are linear, with
   unit-variance Gaussian noise, as in the paper, so the code is real-valued, not squashed.
2. Unrolling. The encoder is the RBMs bottom to top, the decoder their transposes top to bottom:
   encoder layer i computes σ(W_i v + c_i) (linear for the code), the mirrored decoder layer
   σ(W_iᵀ h + b_i), whose last one gives pixel probabilities. At 32×32×3 with the paper's widths:
   3072 → 1000 → 500 → 250 → 30 (code) → 250 → 500 → 1000 → 3072.
3. Fine-tuning. Backpropagation through the unrolled net on reconstruction (cross-entropy, the
   paper's choice for pixel probabilities, or squared error); encoder and decoder weights, tied
   at the start, are then trained apart.

CD-1, as the paper's code (rbm.m, rbmhidlinear.m) does it, for a batch v0 of B visible vectors:

    p0 = σ(v0 Wᵀ + c), h0 ~ Bernoulli(p0);  v1 = σ(h0 W + b) (probabilities, not sampled);
    p1 = σ(v1 Wᵀ + c);  ΔW ∝ (p0ᵀ v0 − p1ᵀ v1) / B − weight_cost·W,
    Δb ∝ mean(v0 − v1),  Δc ∝ mean(p0 − p1).

For the linear top RBM the means v Wᵀ + c stand in for p, and h0 = p0 + N(0, 1). These updates
follow no loss that could be back-propagated, so the model optimises manually: an RBM phase writes
the negated updates into the parameters' .grad and steps that RBM's SGD (with momentum, as the
paper) through ctx.step; the fine-tune phase back-propagates through ctx.backward and ctx.step.

Fine-tuning learns offsets. The unrolled decoder must start as the RBMs' transposes, which exist
only when pretraining ends, so the unrolled layers compute with W_i + ΔE_i and W_iᵀ + ΔD_i (biases
alike), the offsets starting at zero: no weights are copied in the middle of a run, and resuming
needs no record of such a copy. The gradient is the same for an offset as for the weight it
shifts, so each unrolled weight takes exactly the steps a fresh Adam would take on a copy of the
RBM's weight (a test checks this); the RBMs stay as they were pretrained, to compare with.

Where this differs from the paper:
- The paper fine-tuned with conjugate gradients on large batches; here Adam (`lr`) on the trainer's
  batches.
- The paper's momentum rose from 0.5 to 0.9 after five epochs; here one momentum, `rbm_momentum`.
- Colour pixels are Bernoulli probabilities; the paper's faces network had Gaussian visible units.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, Phase, TrainContext
from gentool.plugins.deep_ae import Config

FINE_TUNE = "fine-tune"
INIT_STD = 0.01  # RBM weights start as 0.01·N(0, 1), biases at 0 (Hinton 2010, §8)


class RBM(nn.Module):
    """A restricted Boltzmann machine with Bernoulli visible units, trained by CD-1."""

    def __init__(self, n_visible: int, n_hidden: int, *, linear_hidden: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(INIT_STD * torch.randn(n_hidden, n_visible))  # (n_h, n_v)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))  # b
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))  # c
        self.linear_hidden = linear_hidden  # Gaussian hidden units of unit variance (the code)

    def hidden_mean(self, v: torch.Tensor) -> torch.Tensor:
        """E[h | v], (B, n_h): probabilities, or the means of linear units."""
        pre = F.linear(v, self.weight, self.hidden_bias)
        return pre if self.linear_hidden else torch.sigmoid(pre)

    def sample_hidden(self, mean: torch.Tensor) -> torch.Tensor:
        if self.linear_hidden:
            return mean + torch.randn_like(mean)
        return (torch.rand_like(mean) < mean).to(mean.dtype)  # Bernoulli(mean)

    def visible_probability(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(h, self.weight.t(), self.visible_bias))  # (B, n_v)

    @torch.no_grad()
    def write_cd1_gradients(self, v0: torch.Tensor, weight_cost: float) -> torch.Tensor:
        """Put the negated CD-1 updates into .grad (an optimizer's descent step then follows
        them) and return the mean squared reconstruction error of v0."""
        p0 = self.hidden_mean(v0)  # (B, n_h), positive phase
        v1 = self.visible_probability(self.sample_hidden(p0))  # (B, n_v), one Gibbs step
        p1 = self.hidden_mean(v1)  # (B, n_h), negative phase
        batch = v0.shape[0]
        positive, negative = p0.t() @ v0, p1.t() @ v1  # (n_h, n_v) each
        # Under --amp these are bfloat16; a gradient takes its parameter's dtype.
        dtype = self.weight.dtype
        self.weight.grad = (-(positive - negative) / batch + weight_cost * self.weight).to(dtype)
        self.visible_bias.grad = -(v0 - v1).mean(dim=0).to(dtype)
        self.hidden_bias.grad = -(p0 - p1).mean(dim=0).to(dtype)
        return F.mse_loss(v1, v0)


class Offset(nn.Module):
    """What fine-tuning adds to an unrolled layer's pretrained weight and bias; zero at first."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))


class DeepAutoencoder(nn.Module):
    manual_optimization = True  # CD-1 is no gradient of a loss: the steps are written by hand

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"deep-ae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        sizes = list(pairwise((spec.channels * spec.height * spec.width, *config.hidden)))
        top = len(sizes) - 1
        self.rbms = nn.ModuleList(
            RBM(n_visible, n_hidden, linear_hidden=index == top)
            for index, (n_visible, n_hidden) in enumerate(sizes)
        )
        self.encoder_offsets = nn.ModuleList(Offset(n_v, n_h) for n_v, n_h in sizes)
        self.decoder_offsets = nn.ModuleList(Offset(n_h, n_v) for n_v, n_h in sizes)

    def phases(self) -> list[Phase]:
        rbm_phases = [
            Phase(f"rbm {i}", self.config.rbm_epochs, f"rbm {i}")
            for i in range(1, len(self.rbms) + 1)
        ]
        return [*rbm_phases, Phase(FINE_TUNE, self.config.finetune_epochs, FINE_TUNE)]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers: dict[str, torch.optim.Optimizer] = {}
        for i, rbm in enumerate(self.rbms, start=1):
            lr = self.config.code_rbm_lr if rbm.linear_hidden else self.config.rbm_lr
            optimizers[f"rbm {i}"] = torch.optim.SGD(
                rbm.parameters(), lr=lr, momentum=self.config.rbm_momentum
            )
        offsets = [*self.encoder_offsets.parameters(), *self.decoder_offsets.parameters()]
        optimizers[FINE_TUNE] = torch.optim.Adam(offsets, lr=self.config.lr)
        return optimizers

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        phase = ctx.phase or self.phases()[0].name  # a step outside any phase: the first one's
        x = batch.images.flatten(1)  # (B, C, H, W) → (B, C·H·W), in [0, 1]
        if phase == FINE_TUNE:
            return self.fine_tune_step(x, ctx)
        return self.rbm_step(self._rbm_index(phase), x, ctx)

    def rbm_step(self, index: int, x: torch.Tensor, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """One CD-1 update of RBM `index` (from 0), on the hidden probabilities of those below."""
        with torch.no_grad():
            v0 = x
            for below in self.rbms[:index]:
                v0 = below.hidden_mean(v0)  # (B, n_index)
        recon = self.rbms[index].write_cd1_gradients(v0, self.config.weight_cost)
        ctx.step(f"rbm {index + 1}")
        return {"recon": recon}

    def fine_tune_step(self, x: torch.Tensor, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Backpropagation through the unrolled encoder and decoder on pixel reconstruction."""
        ctx.optimizers[FINE_TUNE].zero_grad(set_to_none=True)
        logits = self._decode_logits(self._encode_flat(x))  # (B, C·H·W)
        if self.config.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, x)
        else:
            loss = F.mse_loss(torch.sigmoid(logits), x)
        ctx.backward(loss)
        ctx.step(FINE_TUNE)
        mse = F.mse_loss(torch.sigmoid(logits.detach()), x)  # in [0, 1] pixel units
        return {"loss": loss.detach(), "mse": mse}

    def encoder_layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (n_h, n_v) and bias of encoder layer `index`: RBM `index` plus its offsets."""
        rbm, offset = self.rbms[index], self.encoder_offsets[index]
        return rbm.weight.detach() + offset.weight, rbm.hidden_bias.detach() + offset.bias

    def decoder_layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (n_v, n_h) and bias of the decoder layer mirroring encoder layer `index`."""
        rbm, offset = self.rbms[index], self.decoder_offsets[index]
        return rbm.weight.detach().t() + offset.weight, rbm.visible_bias.detach() + offset.bias

    def _rbm_index(self, phase: str) -> int:
        names = [f"rbm {i}" for i in range(1, len(self.rbms) + 1)]
        if phase not in names:
            raise ValueError(
                f"deep-ae has no phase {phase!r}: its phases are {', '.join(names)}, {FINE_TUNE}"
            )
        return names.index(phase)

    def _encode_flat(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        top = len(self.rbms) - 1
        for index in range(len(self.rbms)):
            pre = F.linear(h, *self.encoder_layer(index))
            h = pre if index == top else torch.sigmoid(pre)  # the code layer is linear
        return h  # (B, hidden[-1])

    def _decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for index in reversed(range(len(self.rbms))):
            pre = F.linear(h, *self.decoder_layer(index))
            h = torch.sigmoid(pre) if index > 0 else pre  # the last layer: the pixels' logits
        return h  # (B, C·H·W)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The linear code of the unrolled encoder: (B, hidden[-1])."""
        return self._encode_flat(x.flatten(1))

    @torch.no_grad()
    def decode(self, code: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        probabilities = torch.sigmoid(self._decode_logits(code))  # (B, C·H·W)
        return probabilities.view(-1, *self.image_shape)  # (B, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
