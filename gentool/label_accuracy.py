"""Label accuracy: how often a conditional model draws the class it is asked for.

A small CNN that ships with gentool (``gentool/assets/shape_classifier.safetensors``, trained by
``scripts/train_shape_classifier.py`` on the built-in shapes) names the shape in an image. The
metric asks the model for `n` images, one class after another, and reports the share the
classifier puts in the asked class: overall and per class. It applies to a run whose classes are
built-in shape names (a run on ``builtin:shapes``, or on a folder of those shapes); the
classifier knows nothing of other classes. docs/evaluation.md gives its accuracy on real shapes.

The builtin feature network's class head is not used: it was trained to tell shapes from garbage,
not from one another, and names the class of only about two real 32×32 shapes in three.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gentool.api import DataSpec, ModelPlugin
from gentool.errors import GentoolError
from gentool.features import builtin_pixels
from gentool.sampling import draw_uint8
from gentool.synthetic import SHAPE_CLASSES

CLASSIFIER_WEIGHTS = Path(__file__).parent / "assets" / "shape_classifier.safetensors"
CLASSIFIER_VERSION = 1  # bump with every retraining
CLASSIFIER_PREPROCESSING = "RGB (grey replicated), bilinear antialiased resize to 32×32, [0, 1]"
_BATCH = 500


class ShapeClassifier(nn.Module):
    """Five 3×3 convolutions with BatchNorm (32×32 → 4×4), a global average and a linear layer
    over the six built-in shapes."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 32, 64, 64, 128, 128)
        strides = (1, 2, 1, 2, 2)
        layers: list[nn.Module] = []
        for (width_in, width_out), stride in zip(pairwise(widths), strides, strict=True):
            layers += [
                nn.Conv2d(width_in, width_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width_out),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], len(SHAPE_CLASSES))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) floats in [0, 1] → (B, 6) logits, in SHAPE_CLASSES order."""
        return self.classifier(self.body(pixels).mean(dim=(2, 3)))


def load_classifier(device: torch.device, weights: Path = CLASSIFIER_WEIGHTS) -> ShapeClassifier:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise GentoolError(
            f"the shape classifier's weights {weights} cannot be read ({error}): reinstall gentool"
        ) from None
    with torch.device("meta"):  # no random initialisation: it would draw from torch's RNG
        network = ShapeClassifier()
    network.load_state_dict(tensors, assign=True)
    return network.eval().to(device)


def classify(network: ShapeClassifier, images: torch.Tensor) -> torch.Tensor:
    """The shape each of N ≥ 1 (N, C, H, W) uint8 images shows, as (N,) SHAPE_CLASSES indexes."""
    device = next(network.parameters()).device
    predicted = []
    with torch.no_grad():
        for start in range(0, images.shape[0], _BATCH):
            pixels = builtin_pixels(images[start : start + _BATCH].to(device))
            predicted.append(network(pixels).argmax(dim=1).cpu())
    return torch.cat(predicted)


def unknown_classes(class_names: tuple[str, ...]) -> list[str]:
    """The run's classes the classifier cannot recognise."""
    return [name for name in class_names if name not in SHAPE_CLASSES]


def check_measurable(class_names: tuple[str, ...], model: str, flag: str = "--metrics") -> None:
    """Raise GentoolError unless label accuracy can be measured for a run with these classes;
    `flag` is the option that asked for it."""
    unknown = unknown_classes(class_names)
    if unknown or not class_names:
        what = "no classes"
        if unknown:
            others = " is not a shape" if len(unknown) == 1 else " are not shapes"
            what = f"classes {', '.join(class_names)}, of which {', '.join(unknown)}{others}"
        raise GentoolError(
            f"label accuracy needs a run on the built-in shapes ({', '.join(SHAPE_CLASSES)}), "
            f"and this {model} run has {what}: leave out labels from {flag}"
        )


def label_accuracy(
    model: torch.nn.Module, plugin: ModelPlugin, spec: DataSpec, n: int, *, seed: int
) -> dict[str, Any]:
    """`label_accuracy` (the mean over classes of the share drawn as asked) and
    `label_accuracy_by_class` (class name → share), from `n` images drawn one class after
    another with `seed`."""
    check_measurable(spec.class_names, plugin.name)
    asked = torch.arange(n) % spec.num_classes
    images = draw_uint8(model, plugin, spec, n, seed=seed, labels=asked)
    network = load_classifier(next(model.parameters()).device)
    drawn = classify(network, images)
    by_class = {}
    for index, name in enumerate(spec.class_names):
        shape = SHAPE_CLASSES.index(name)
        by_class[name] = (drawn[asked == index] == shape).double().mean().item()
    return {
        "label_accuracy": sum(by_class.values()) / len(by_class),
        "label_accuracy_by_class": by_class,
    }
