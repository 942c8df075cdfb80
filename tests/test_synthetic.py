"""Tests for the procedurally drawn built-in data sets."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gentool.synthetic import SHAPE_CLASSES, make_faces, make_shapes


@pytest.mark.parametrize("size", [8, 17, 64, 256])
def test_faces_have_requested_shape_and_dtype(size: int) -> None:
    images = make_faces(2, size)
    assert images.shape == (2, size, size, 3)
    assert images.dtype == np.uint8


@pytest.mark.parametrize("size", [8, 32])
def test_shapes_have_requested_shape_and_dtype(size: int) -> None:
    images, labels = make_shapes(7, size)
    assert images.shape == (7, size, size, 3)
    assert images.dtype == np.uint8
    assert labels.shape == (7,)
    assert labels.dtype == np.int64


def test_zero_images_is_an_empty_batch() -> None:
    assert make_faces(0, 16).shape == (0, 16, 16, 3)
    images, labels = make_shapes(0, 16)
    assert images.shape == (0, 16, 16, 3)
    assert labels.shape == (0,)


def test_faces_are_deterministic() -> None:
    np.testing.assert_array_equal(make_faces(6, 32, seed=3), make_faces(6, 32, seed=3))


def test_shapes_are_deterministic() -> None:
    first_images, first_labels = make_shapes(6, 32, seed=3)
    second_images, second_labels = make_shapes(6, 32, seed=3)
    np.testing.assert_array_equal(first_images, second_images)
    np.testing.assert_array_equal(first_labels, second_labels)


def test_faces_depend_only_on_their_index() -> None:
    np.testing.assert_array_equal(make_faces(10, 24, start=5), make_faces(15, 24)[5:])


def test_shapes_depend_only_on_their_index() -> None:
    tail_images, tail_labels = make_shapes(10, 24, start=5)
    all_images, all_labels = make_shapes(15, 24)
    np.testing.assert_array_equal(tail_images, all_images[5:])
    np.testing.assert_array_equal(tail_labels, all_labels[5:])


def test_different_seeds_give_different_images() -> None:
    faces_a, faces_b = make_faces(8, 32, seed=0), make_faces(8, 32, seed=1)
    assert all(not np.array_equal(a, b) for a, b in zip(faces_a, faces_b, strict=True))
    shapes_a, shapes_b = make_shapes(8, 32, seed=0)[0], make_shapes(8, 32, seed=1)[0]
    assert all(not np.array_equal(a, b) for a, b in zip(shapes_a, shapes_b, strict=True))


def test_faces_vary_from_image_to_image() -> None:
    faces = make_faces(50, 32).reshape(50, -1).astype(np.float32)
    # Mean absolute difference between every pair: a near-duplicate would score close to 0.
    differences = np.abs(faces[:, None, :] - faces[None, :, :]).mean(axis=-1)
    off_diagonal = differences[~np.eye(50, dtype=bool)]
    assert off_diagonal.min() > 10
    # A blank or flat image would have almost no spread of pixel values.
    assert faces.std(axis=1).min() > 20


def test_shape_labels_are_balanced_and_in_range() -> None:
    _, labels = make_shapes(60, 16, start=3)
    assert labels.min() >= 0
    assert labels.max() < len(SHAPE_CLASSES)
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert (counts == 60 // len(SHAPE_CLASSES)).all()


def _radial_profiles(images: np.ndarray, rings: int = 6) -> np.ndarray:
    """Mean shape coverage in rings around each shape's centre: a rotation-invariant signature."""
    pixels = images.astype(np.float64)
    # Corners lie outside every shape's bounding circle, so they show the background colour.
    distance = np.linalg.norm(pixels - pixels[:, :1, :1, :], axis=-1)
    coverage = distance / distance.max(axis=(1, 2), keepdims=True)
    height, width = coverage.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    total = coverage.sum(axis=(1, 2))
    centre_y = (coverage * ys).sum(axis=(1, 2)) / total
    centre_x = (coverage * xs).sum(axis=(1, 2)) / total
    radius = np.hypot(ys - centre_y[:, None, None], xs - centre_x[:, None, None])
    reach = np.array([r[c > 0.5].max() for r, c in zip(radius, coverage, strict=True)]) + 0.5
    relative = radius / reach[:, None, None]
    profile = []
    for ring in range(rings):
        inside = (relative >= ring / rings) & (relative < (ring + 1) / rings)
        area = np.maximum(inside.sum(axis=(1, 2)), 1)
        profile.append((coverage * inside).sum(axis=(1, 2)) / area)
    return np.stack(profile, axis=1)


def test_shape_classes_are_distinguishable() -> None:
    train_images, train_labels = make_shapes(300, 32, seed=1)
    test_images, test_labels = make_shapes(300, 32, seed=2)
    train_profiles = _radial_profiles(train_images)
    centroids = np.stack(
        [train_profiles[train_labels == label].mean(axis=0) for label in range(len(SHAPE_CLASSES))]
    )
    test_profiles = _radial_profiles(test_images)
    squared_distances = ((test_profiles[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    predictions = squared_distances.argmin(axis=1)
    # Even this crude nearest-centroid classifier must tell every class apart most of the time.
    for label in range(len(SHAPE_CLASSES)):
        of_class = test_labels == label
        assert (predictions[of_class] == label).mean() > 0.8, SHAPE_CLASSES[label]


@pytest.mark.parametrize("make", [make_faces, make_shapes])
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n": -1, "size": 32}, "n must be >= 0, got -1"),
        ({"n": 1, "size": 7}, "size must be between 8 and 1024, got 7"),
        ({"n": 1, "size": 1025}, "size must be between 8 and 1024, got 1025"),
        ({"n": 1, "size": 32, "start": -2}, "start must be >= 0, got -2"),
    ],
)
def test_bad_arguments_raise_value_error(make, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**arguments)


def test_module_does_not_import_torch() -> None:
    check = "import sys, gentool.synthetic; sys.exit('torch' in sys.modules)"
    repository_root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", check], cwd=repository_root, check=False)
    assert result.returncode == 0
