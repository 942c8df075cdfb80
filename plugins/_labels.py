"""The class labels a conditional model is given: checked, or chosen when none are; and the
sampling methods of a conditional GAN, whose generator takes noise and labels.

Imports torch: load it from a plugin's `model.py`, never from its `__init__.py`.
"""

from __future__ import annotations

import torch

from gentool.plugins._latent import StandardNormalLatent


def labels_or_default(
    labels: torch.Tensor | None, n: int, class_names: tuple[str, ...], model: str
) -> torch.Tensor:
    """`labels`, checked to be `n` indexes of `class_names`; by default i mod the class count,
    so that any grid of at least that many images shows every class."""
    if labels is None:
        return torch.arange(n) % len(class_names)
    if not (torch.compiler.is_exporting() or torch.jit.is_tracing()):
        # An exported graph cannot branch on its inputs: its description says which it takes.
        check_labels(labels, n, class_names, model)
    return labels


def check_labels(labels: torch.Tensor, n: int, class_names: tuple[str, ...], model: str) -> None:
    """Raise ValueError, naming the classes, unless `labels` are `n` integer class indexes."""
    if not isinstance(labels, torch.Tensor) or labels.shape != (n,):
        got = (
            f"shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )  # fmt: skip
        raise ValueError(f"labels must be a tensor of {n} class indexes, shape ({n},), got {got}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indexes, got dtype {labels.dtype}")
    count = len(class_names)
    outside = labels[(labels < 0) | (labels >= count)]
    if len(outside):
        classes = ", ".join(f"{index}={name}" for index, name in enumerate(class_names))
        raise ValueError(
            f"label {int(outside[0])} is out of range: this {model} knows {count} classes, "
            f"0 to {count - 1} ({classes})"
        )


def check_classes(spec_classes: int, class_names: tuple[str, ...], model: str) -> None:
    """Raise ValueError unless the data has at least two classes to condition on."""
    if spec_classes < 2:
        found = f"1 class ({class_names[0]})" if class_names else "no labels"
        raise ValueError(
            f"{model} needs labelled data with at least 2 classes, and the data has {found}; "
            "put the images in one sub-folder per class"
        )


class ConditionalSampling(StandardNormalLatent):
    """`sample_latent`, `decode` and `sample` of a conditional GAN module: z ~ N(0, I) of
    `config.latent_dim`, drawn by `generator(z, labels)` for `class_names`; `model_name` names
    the model in errors."""

    model_name: str
    class_names: tuple[str, ...]

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images of classes `labels` (default: i mod num_classes) from noise vectors z."""
        labels = labels_or_default(labels, z.shape[0], self.class_names, self.model_name)
        return self.generator(z, labels.to(device=z.device, dtype=torch.int64))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]; image i shows class labels[i], by default i mod num_classes,
        so that any grid of at least num_classes images shows every class."""
        labels = labels_or_default(labels, n, self.class_names, self.model_name)
        return self.decode(self.sample_latent(n, generator=generator), labels=labels)
