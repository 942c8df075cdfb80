"""Feature extractors that map images to the vectors FID, KID and precision/recall compare.

- ``builtin``: a small CNN shipped with gentool (``gentool/assets/features_builtin.safetensors``,
  trained by ``scripts/train_features.py`` on the built-in faces and shapes, see
  docs/evaluation.md). It works offline and costs milliseconds; its numbers compare runs on the
  built-in kind of data, not papers.
- ``inception``: the standard Inception-v3 pool features (2048-d) through torch-fidelity, the
  library torchmetrics' FID uses too. Its weights download on first use, so it needs the network
  once.

An extractor takes (N, C, H, W) uint8 images of any size and returns (N, d) float32 features.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gentool.errors import GentoolError

FEATURE_NAMES = ("builtin", "inception")
BUILTIN_WEIGHTS = Path(__file__).parent / "assets" / "features_builtin.safetensors"
BUILTIN_VERSION = 1  # bump with every retraining, so cached statistics are recomputed
BUILTIN_IMAGE_SIZE = 32
BUILTIN_FEATURES = 128
BUILTIN_THUMBNAIL = 4  # the auxiliary head predicts a 4×4 RGB thumbnail of the input
BUILTIN_PREPROCESSING = "RGB (grey replicated), bilinear antialiased resize to 32×32, [0, 1]"
BUILTIN_CLASSES: tuple[str, ...] = (
    "face",
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "blurred",
    "noisy",
    "shuffled",
    "noise",
    "blobs",
)
_BATCH = 256


class FeatureError(GentoolError):
    """A feature extractor cannot be used here: a missing package, weights or network."""


@dataclass(frozen=True)
class FeatureExtractor:
    """A named image → feature map; `identity` changes whenever its features could."""

    name: str
    identity: str  # name, version, preprocessing and a hash of the weights
    dimension: int
    extract: Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) uint8 → (B, d) float32

    def __call__(self, images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Features of (N, C, H, W) uint8 images, computed in batches on `device` (the images'
        own by default) and returned on the CPU."""
        outputs = []
        with torch.no_grad():
            for start in range(0, images.shape[0], _BATCH):
                batch = images[start : start + _BATCH]
                if device is not None:
                    batch = batch.to(device)
                outputs.append(self.extract(batch).float().cpu())
        return torch.cat(outputs) if outputs else torch.empty(0, self.dimension)


class BuiltinFeatureNet(nn.Module):
    """Four 3×3 convolutions (32×32 → 4×4) and a global average: 128 features.

    Two heads train it and are dropped at evaluation: a classifier over real faces, the six
    shapes and five kinds of garbage (so the features tell real from broken images), and a
    regressor of the input's 4×4 colour thumbnail (so they keep how real images differ from one
    another, and a generator that draws one face many times scores badly).
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),  # (B, 32, 32, 32)
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),  # (B, 32, 16, 16)
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # (B, 64, 8, 8)
            nn.ReLU(),
            nn.Conv2d(64, BUILTIN_FEATURES, 3, stride=2, padding=1),  # (B, 128, 4, 4)
            nn.ReLU(),
        )
        self.classifier = nn.Linear(BUILTIN_FEATURES, len(BUILTIN_CLASSES))
        self.thumbnail = nn.Linear(BUILTIN_FEATURES, 3 * BUILTIN_THUMBNAIL**2)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) floats in [0, 1] → (B, 128)."""
        return self.body(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(pixels)
        return self.classifier(features), self.thumbnail(features)


def builtin_pixels(images: torch.Tensor) -> torch.Tensor:
    """The builtin network's preprocessing: uint8 (B, C, H, W) → float (B, 3, 32, 32) in [0, 1]."""
    pixels = images.to(torch.float32) / 255
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[2:] != (BUILTIN_IMAGE_SIZE, BUILTIN_IMAGE_SIZE):
        pixels = nn.functional.interpolate(
            pixels,
            size=(BUILTIN_IMAGE_SIZE, BUILTIN_IMAGE_SIZE),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    return pixels


def load_extractor(name: str, device: torch.device | None = None) -> FeatureExtractor:
    """The feature extractor called `name`, on `device` (the CPU by default)."""
    device = device or torch.device("cpu")
    if name == "builtin":
        return _builtin_extractor(device)
    if name == "inception":
        return _inception_extractor(device)
    raise FeatureError(f"unknown --features {name!r}: use {' or '.join(FEATURE_NAMES)}")


def _builtin_extractor(device: torch.device, weights: Path = BUILTIN_WEIGHTS) -> FeatureExtractor:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as error:
        raise FeatureError(
            f"the builtin feature weights {weights} cannot be read ({error}): reinstall gentool"
        ) from None
    with torch.device("meta"):  # no random initialisation: it would draw from torch's RNG
        network = BuiltinFeatureNet()
    network.load_state_dict(tensors, assign=True)
    network.eval().to(device)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    identity = json.dumps(
        {
            "name": "builtin",
            "version": metadata.get("version"),
            "preprocessing": metadata.get("preprocessing"),
            "weights": digest,
        },
        sort_keys=True,
    )

    def extract(images: torch.Tensor) -> torch.Tensor:
        return network.features(builtin_pixels(images))

    return FeatureExtractor("builtin", identity, BUILTIN_FEATURES, extract)


def _inception_extractor(device: torch.device) -> FeatureExtractor:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise FeatureError(
            "--features inception needs torch-fidelity: pip install torch-fidelity (its "
            "Inception-v3 weights download on first use); offline, use --features builtin"
        ) from None
    try:
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    except Exception as error:  # a download failing offline surfaces as any of several types
        raise FeatureError(
            f"the Inception-v3 weights could not be loaded ({type(error).__name__}: {error}); "
            "connect once to download them into torch's cache, or use --features builtin"
        ) from None
    network.eval().to(device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        (features,) = network(images)  # resizes to 299×299 itself, as the reference code does
        return features

    identity = json.dumps({"name": "inception", "variant": "inception-v3-compat", "layer": 2048})
    return FeatureExtractor("inception", identity, 2048, extract)
