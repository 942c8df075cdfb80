"""The feature extractors: the shipped builtin network and the optional Inception-v3."""

from __future__ import annotations

import json
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from gentool import synthetic
from gentool.features import (
    BUILTIN_PREPROCESSING,
    BUILTIN_VERSION,
    FeatureError,
    load_extractor,
)
from gentool.metrics import frechet_distance, gaussian_statistics

REPO = Path(__file__).resolve().parents[1]


def builtin_weights() -> Path:
    return Path(str(resources.files("gentool") / "assets" / "features_builtin.safetensors"))


def test_the_builtin_weights_ship_in_the_package_small_and_described():
    path = builtin_weights()
    assert path.is_file()
    assert path.stat().st_size < 2 * 1024 * 1024
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["version"] == str(BUILTIN_VERSION)
    assert metadata["preprocessing"] == BUILTIN_PREPROCESSING
    assert len(json.loads(metadata["classes"])) == 12
    assert json.loads(metadata["held_out"])["accuracy"] > 0.85


def test_a_wheel_of_gentool_carries_the_builtin_weights(tmp_path):
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("gentool-*.whl")
    assert "gentool/assets/features_builtin.safetensors" in zipfile.ZipFile(wheel).namelist()


@pytest.fixture(scope="module")
def builtin():
    return load_extractor("builtin")


@pytest.fixture(scope="module")
def faces():
    return torch.from_numpy(synthetic.make_faces(800, 32)).permute(0, 3, 1, 2).contiguous()


def fid(extractor, first: torch.Tensor, second: torch.Tensor) -> float:
    return frechet_distance(
        gaussian_statistics(extractor(first)), gaussian_statistics(extractor(second))
    )


def test_builtin_features_tell_real_faces_from_garbage_and_from_a_collapsed_set(builtin, faces):
    real_a, real_b = faces[:400], faces[400:]
    baseline = fid(builtin, real_a, real_b)
    pixels = real_b.float() / 255
    blurred = F.interpolate(F.interpolate(pixels, size=8, mode="area"), size=32, mode="bilinear")
    noisy = pixels + 0.2 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(1))
    collapsed = real_b[:8].repeat(50, 1, 1, 1)  # eight faces drawn over and over
    shapes, _ = synthetic.make_shapes(400, 32)
    others = {
        "blurred": blurred,
        "noisy": noisy,
        "noise": noise,
        "collapsed": collapsed.float() / 255,
        "shapes": torch.from_numpy(shapes).permute(0, 3, 1, 2).float() / 255,
    }
    for name, images in others.items():
        garbage = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        assert fid(builtin, real_a, garbage) > 10 * baseline, name


def test_builtin_features_accept_grey_and_other_sizes(builtin, faces):
    grey = faces[:4].float().mean(dim=1, keepdim=True).to(torch.uint8)
    large = torch.from_numpy(synthetic.make_faces(4, 64)).permute(0, 3, 1, 2)
    assert builtin(grey).shape == (4, 128)
    assert builtin(large).shape == (4, 128)


def test_an_unknown_feature_name_is_refused():
    with pytest.raises(FeatureError, match="builtin or inception"):
        load_extractor("vgg")
