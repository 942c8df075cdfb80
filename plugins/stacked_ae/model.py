"""Stacked autoencoder: greedy layer-wise pretraining, then end-to-end fine-tuning (course notes
§1.3.5; Bengio et al., "Greedy layer-wise training of deep networks", NIPS 2007; the mirrored
decoder of the unrolled stack as in Hinton & Salakhutdinov, Science 2006).

k autoencoders, one per width n_i in `hidden`, each one sigmoid layer each way:

    AE i:  h_{i−1} (n_{i−1}) → h_i = σ(W_i h_{i−1} + b_i) (n_i) → σ(W'_i h_i + b'_i) (n_{i−1})

with h_0 the pixels. Phase "layer i" trains AE i alone, with its own Adam, to reconstruct h_{i−1}:
the codes of the frozen AEs below it (the first AE reconstructs the pixels). Every target lies in
[0, 1], pixels or sigmoid codes, so every AE ends in a sigmoid and scores by mean squared error.
Phase "fine-tune" stacks the k encoders and, in mirror order, the k decoders,

    x → h_1 → … → h_k (the code) → … → x',

and trains them end to end on the mean squared error of x' against x. When the data is labelled, a
linear classifier on the code h_k adds its cross-entropy (× `classifier_weight`), so that the code
is also shaped for classification: the notes' stack ends in a classifier.

Pretraining and fine-tuning train the same weights: each "layer i" phase steps AE i's encoder and
decoder with that layer's own Adam, and the fine-tune phase steps every AE's weights, and the
classifier's, with its own Adam, starting from where pretraining left them.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, Phase, TrainContext
from gentool.plugins.stacked_ae import Config

FINE_TUNE = "fine-tune"


class LayerAutoencoder(nn.Module):
    """AE i of the stack: n_in → n_out → n_in, a sigmoid after each layer."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(n_in, n_out)
        self.decoder = nn.Linear(n_out, n_in)

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(h))  # (B, n_out)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(code))  # (B, n_in)


class StackedAutoencoder(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"stacked-ae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        sizes = (spec.channels * spec.height * spec.width, *config.hidden)
        self.layers = nn.ModuleList(
            LayerAutoencoder(n_in, n_out) for n_in, n_out in pairwise(sizes)
        )
        # Only labelled data has a classifier: the top code's class logits.
        self.classifier = (
            nn.Linear(config.hidden[-1], spec.num_classes) if spec.num_classes >= 2 else None
        )

    def phases(self) -> list[Phase]:
        layer_phases = [
            Phase(f"layer {i}", self.config.layer_epochs, f"layer {i}")
            for i in range(1, len(self.layers) + 1)
        ]
        return [*layer_phases, Phase(FINE_TUNE, self.config.finetune_epochs, FINE_TUNE)]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.config.lr
        optimizers = {
            f"layer {i}": torch.optim.Adam(layer.parameters(), lr=lr)
            for i, layer in enumerate(self.layers, start=1)
        }
        # The whole stack, and the classifier when there is one: every parameter of the model.
        optimizers[FINE_TUNE] = torch.optim.Adam(self.parameters(), lr=lr)
        return optimizers

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        phase = ctx.phase or self.phases()[0].name  # a step outside any phase: the first one's
        x = batch.images.flatten(1)  # (B, C, H, W) → (B, C·H·W), in [0, 1]
        if phase == FINE_TUNE:
            return self.fine_tune_step(x, batch.labels)
        return self.layer_step(self._layer_index(phase), x)

    def layer_step(self, index: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Greedy pretraining of AE `index` (from 0) on the codes of the frozen AEs below it."""
        with torch.no_grad():
            target = x
            for below in self.layers[:index]:
                target = below.encode(target)  # (B, n_index)
        layer = self.layers[index]
        recon = layer.decode(layer.encode(target))
        loss = F.mse_loss(recon, target)
        return {"loss": loss, "recon": loss.detach()}

    def fine_tune_step(
        self, x: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The whole stack end to end: pixel reconstruction, plus the classifier when labelled."""
        code = self._encode_flat(x)  # (B, n_k)
        recon = F.mse_loss(self._decode_flat(code), x)
        logs = {"recon": recon.detach()}
        loss = recon
        if self.classifier is not None:
            if labels is None:
                raise ValueError(
                    "stacked-ae was built for labelled data (it has a classifier), "
                    "but the batch has no labels"
                )
            logits = self.classifier(code)  # (B, classes)
            class_loss = F.cross_entropy(logits, labels)
            loss = loss + self.config.classifier_weight * class_loss
            logs["class_loss"] = class_loss.detach()
            logs["accuracy"] = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, **logs}

    def _layer_index(self, phase: str) -> int:
        names = [f"layer {i}" for i in range(1, len(self.layers) + 1)]
        if phase not in names:
            raise ValueError(
                f"stacked-ae has no phase {phase!r}: its phases are {', '.join(names)}, {FINE_TUNE}"
            )
        return names.index(phase)

    def _encode_flat(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer.encode(h)
        return h

    def _decode_flat(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for layer in reversed(self.layers):
            h = layer.decode(h)
        return h

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The top code h_k of the (fine-tuned) stack: (B, hidden[-1]) in (0, 1)."""
        return self._encode_flat(x.flatten(1))

    @torch.no_grad()
    def decode(self, code: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._decode_flat(code).view(-1, *self.image_shape)  # (B, C·H·W) → (B, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
