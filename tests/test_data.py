from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.api import DataSpec
from gentool.data import (
    BatchLoader,
    DataWarning,
    ImageDataset,
    cache_dir,
    load_dataset,
    load_image,
    to_uint8,
    to_value_range,
    write_builtin_set,
)
from gentool.errors import DataError


def write_png(path, size=(20, 12), color=(200, 30, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_a_folder_is_searched_recursively_and_fitted_to_the_model_size(tmp_path):
    write_png(tmp_path / "a.png", size=(40, 20))
    write_png(tmp_path / "nested" / "deeper" / "b.jpg", size=(16, 16))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning, match="treated as unlabelled"):
        dataset = load_dataset(str(tmp_path), image_size=8)
    assert dataset.images.shape == (2, 3, 8, 8)
    assert dataset.images.dtype == torch.uint8
    assert dataset.labels is None


def test_immediate_sub_folders_are_class_labels(tmp_path):
    for name, count in [("cats", 2), ("dogs", 3)]:
        for index in range(count):
            write_png(tmp_path / name / f"{index}.png", color=(index * 50, 0, 0))
    write_png(tmp_path / "dogs" / "puppies" / "p.png")  # deeper folders belong to their class
    dataset = load_dataset(str(tmp_path), image_size=8)
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert dataset.spec.num_classes == 2


def test_loose_images_beside_class_folders_make_the_set_unlabelled_with_a_warning(tmp_path):
    write_png(tmp_path / "cats" / "0.png")
    write_png(tmp_path / "loose.png")
    with pytest.warns(DataWarning, match="1 image lies directly in"):
        dataset = load_dataset(str(tmp_path), image_size=8)
    assert dataset.labels is None and len(dataset) == 2


def test_all_grey_images_give_one_channel_and_any_colour_gives_three(tmp_path):
    write_png(tmp_path / "grey" / "a.png", mode="L", color=100)
    assert load_dataset(str(tmp_path / "grey"), image_size=8).images.shape[1] == 1
    write_png(tmp_path / "grey" / "b.png", color=(1, 2, 3))
    mixed = load_dataset(str(tmp_path / "grey"), image_size=8)
    assert mixed.images.shape[1] == 3
    assert mixed.images[0].unique().tolist() == [100]  # the grey image, replicated to RGB


def test_corrupt_files_are_skipped_with_a_count(tmp_path):
    write_png(tmp_path / "good.png")
    (tmp_path / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for _ in ("decoded", "from the cache"):  # the count is said again when the cache is used
        with pytest.warns(
            DataWarning, match="skipped 2 of 3 files that could not be decoded"
        ) as said:
            dataset = load_dataset(str(tmp_path), image_size=8)
        assert len(dataset) == 1
        message = str(said[0].message)
        assert "empty.jpg: not an image in a format gentool reads" in message  # named, not BytesIO
        assert "BytesIO" not in message


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "data path .* does not exist"),
        ("empty", "no images found in"),
        ("only_text", "no images found in"),
        ("all_corrupt", "none of the 2 image files .* could be decoded .*a.png: not an image"),
        ("text_file", "cannot read .*: give a folder of images, a .zip or .npz file"),
        ("empty_name", "--data is empty .*an unset shell variable"),
        ("system", "'/proc/self' is a folder of the system, not data"),
    ],
)
def test_unusable_sources_are_clear_errors(tmp_path, layout, message):
    source = tmp_path / "data"
    if layout not in ("missing", "text_file", "empty_name", "system"):
        source.mkdir()
    if layout == "only_text":
        (source / "readme.md").write_text("hello")
    if layout == "all_corrupt":
        (source / "a.png").write_bytes(b"junk")
        (source / "b.png").write_bytes(b"more junk")
    if layout == "text_file":
        source.write_text("hello")
    with pytest.raises(DataError, match=message):
        named = {"empty_name": "", "system": "/proc/self"}.get(layout, str(source))
        load_dataset(named, image_size=8)


def test_mixed_sizes_need_a_model_size(tmp_path):
    write_png(tmp_path / "a.png", size=(8, 8))
    write_png(tmp_path / "b.png", size=(9, 9))
    with pytest.raises(DataError, match=r"different sizes \(8×8, 9×9\) and no size was set"):
        load_dataset(str(tmp_path), image_size=None)


def test_a_model_that_needs_labels_refuses_unlabelled_data(tmp_path):
    write_png(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"needs class labels.*one sub-folder per class"):
        load_dataset(str(tmp_path), image_size=8, needs_labels=True)


def test_limit_takes_a_sample_that_spans_the_classes(tmp_path):
    for name in ("a", "b"):
        for index in range(10):
            write_png(tmp_path / name / f"{index}.png")
    dataset = load_dataset(str(tmp_path), image_size=8, limit=6)
    assert len(dataset) == 6 and set(dataset.labels.tolist()) == {0, 1}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_images_in_each_layout(tmp_path, layout):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    stored = {"NHWC": pixels, "NCHW": pixels.transpose(0, 3, 1, 2), "NHW": pixels[..., 0]}[layout]
    np.savez(tmp_path / "set.npz", images=stored, labels=np.array([0, 1, 2, 1, 0]))
    dataset = load_dataset(str(tmp_path / "set.npz"), image_size=8)
    channels = 1 if layout == "NHW" else 3
    expected = torch.from_numpy(pixels[..., :channels]).permute(0, 3, 1, 2)
    assert torch.equal(dataset.images, expected)
    assert dataset.labels.tolist() == [0, 1, 2, 1, 0]
    assert dataset.class_names == ("0", "1", "2")


def test_npz_is_resized_and_keeps_its_class_names(tmp_path):
    pixels = np.full((4, 10, 10, 3), 77, dtype=np.uint8)
    np.savez(
        tmp_path / "set.npz",
        images=pixels,
        labels=np.array([0, 1, 0, 1]),
        class_names=np.array(["cat", "dog"]),
    )
    dataset = load_dataset(str(tmp_path / "set.npz"), image_size=8)
    assert dataset.images.shape == (4, 3, 8, 8) and dataset.images.unique().tolist() == [77]
    assert dataset.class_names == ("cat", "dog")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((2, 8, 8), np.uint8)}, r"has no 'images' array \(found: pixels\)"),
        ({"images": np.zeros((2, 8, 8), np.float32)}, "dtype float32; gentool reads uint8"),
        ({"images": np.zeros((2, 8), np.uint8)}, r"shape \(2, 8\); expected"),
        ({"images": np.zeros((2, 8, 8, 5), np.uint8)}, "1 or 3 channels"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(3, int)}, "2 integers"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, -1])}, "≥ 0"),
    ],
)
def test_bad_npz_files_are_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "bad.npz"), image_size=8)


def test_a_corrupt_npz_is_a_clear_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read .* as \.npz"):
        load_dataset(str(tmp_path / "bad.npz"), image_size=8)


def test_builtin_sets_are_deterministic_and_labelled_where_needed():
    faces = load_dataset(None, image_size=16, limit=12)
    assert faces.source == "builtin:faces" and faces.images.shape == (12, 3, 16, 16)
    assert torch.equal(faces.images, load_dataset("builtin:faces", image_size=16, limit=12).images)
    shapes = load_dataset(None, image_size=16, needs_labels=True, limit=12)
    assert shapes.source == "builtin:shapes" and len(shapes.class_names) == 6
    assert shapes.labels.tolist() == [index % 6 for index in range(12)]
    with pytest.raises(DataError, match="unknown built-in data set 'cats'"):
        load_dataset("builtin:cats", image_size=16)


def test_decoded_folders_are_cached_and_a_damaged_cache_is_rebuilt(tmp_path):
    for index in range(3):
        write_png(tmp_path / "data" / f"{index}.png", color=(index, 0, 0))
    first = load_dataset(str(tmp_path / "data"), image_size=8)
    first.images = first.images.clone()  # mapped from the entry, which is damaged below
    (cached,) = cache_dir().glob("*.pixels")
    assert torch.equal(load_dataset(str(tmp_path / "data"), image_size=8).images, first.images)

    cached.write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="is damaged .* decoding again"):
        rebuilt = load_dataset(str(tmp_path / "data"), image_size=8)
    assert torch.equal(rebuilt.images, first.images)

    write_png(tmp_path / "data" / "0.png", color=(99, 0, 0))  # new content, new fingerprint
    changed = load_dataset(str(tmp_path / "data"), image_size=8)
    assert changed.fingerprint != first.fingerprint
    assert changed.images[0, 0, 0, 0] == 99


def make_dataset(count: int) -> ImageDataset:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 2, 2)
    return ImageDataset(images.contiguous(), None, (), "test", "test")


def test_batches_cover_the_data_once_per_epoch_and_drop_the_incomplete_one():
    loader = BatchLoader(
        make_dataset(10), 3, device=torch.device("cpu"), value_range=(0.0, 255.0), seed=1
    )
    batches = list(loader.epoch(0))
    assert loader.steps_per_epoch == 3 and len(batches) == 3
    seen = torch.cat([batch.images[:, 0, 0, 0] for batch in batches]).tolist()
    assert len(set(seen)) == 9


def test_shuffles_are_reproducible_per_epoch_and_resume_mid_epoch():
    loader = BatchLoader(
        make_dataset(12), 4, device=torch.device("cpu"), value_range=(0.0, 255.0), seed=7
    )
    first = [batch.images for batch in loader.epoch(0)]
    assert all(torch.equal(a, b.images) for a, b in zip(first, loader.epoch(0), strict=True))
    assert not torch.equal(torch.cat(first), torch.cat([b.images for b in loader.epoch(1)]))
    resumed = [batch.images for batch in loader.epoch(0, start_step=1)]
    assert all(torch.equal(a, b) for a, b in zip(first[1:], resumed, strict=True))


def test_a_dataset_smaller_than_a_batch_is_a_clear_error():
    with pytest.raises(DataError, match="the data has 5 images, fewer than one batch of 8"):
        BatchLoader(make_dataset(5), 8, device=torch.device("cpu"), value_range=(-1, 1), seed=0)


def test_pixels_scale_to_the_value_range_and_back():
    pixels = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8)
    for value_range in [(-1.0, 1.0), (0.0, 1.0)]:
        scaled = to_value_range(pixels, value_range)
        assert scaled.min() == value_range[0] and scaled.max() == value_range[1]
        assert torch.equal(to_uint8(scaled, value_range), pixels)
    assert to_uint8(torch.tensor([-3.0, 3.0]), (-1.0, 1.0)).tolist() == [0, 255]


def test_builtin_sets_are_written_as_pngs_with_class_folders(tmp_path):
    assert write_builtin_set("shapes", tmp_path / "shapes", count=12, size=16) == 12
    dataset = load_dataset(str(tmp_path / "shapes"), image_size=16, needs_labels=True)
    assert len(dataset.class_names) == 6 and len(dataset) == 12
    with pytest.raises(DataError, match="is not empty"):
        write_builtin_set("faces", tmp_path / "shapes", count=2, size=16)


def test_every_image_mode_becomes_8_bit_grey_or_rgb_without_clipping_or_hidden_colours(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    sixteen_bit = np.full((4, 4), 32896, dtype=np.uint16)  # 128 × 257: mid-grey in 16 bits
    Image.fromarray(sixteen_bit).save(folder / "grey16.png")
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(folder / "float.tif")
    see_through = Image.new("RGBA", (4, 4), (10, 200, 30, 0))  # colour hidden by alpha 0
    see_through.save(folder / "transparent.png")
    Image.new("LA", (4, 4), (7, 0)).save(folder / "grey_alpha.png")
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    palette.save(folder / "palette.png")
    keyed = Image.new("P", (4, 4), 1)
    keyed.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    keyed.save(folder / "keyed.gif", transparency=1)
    Image.new("1", (4, 4), 1).save(folder / "bilevel.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(folder / "print.jpg", quality=100)
    Image.new("RGB", (9, 5), (1, 2, 3)).save(folder / "other_size.png")

    dataset = load_dataset(str(folder), image_size=4)
    assert dataset.images.shape == (9, 3, 4, 4)  # one colour image makes the whole set RGB
    names = sorted(path.name for path in folder.iterdir())
    first_pixel = {name: dataset.images[i, :, 0, 0].tolist() for i, name in enumerate(names)}
    assert first_pixel["grey16.png"] == [128, 128, 128]  # Pillow alone clips it to 255
    assert first_pixel["float.tif"] == [128, 128, 128]  # floats read as [0, 1]
    assert first_pixel["transparent.png"] == [255, 255, 255]  # not the hidden green
    assert first_pixel["grey_alpha.png"] == [255, 255, 255]
    assert first_pixel["palette.png"] == [40, 80, 120]
    assert first_pixel["keyed.gif"] == [255, 255, 255]  # its transparent palette entry
    assert first_pixel["bilevel.png"] == [255, 255, 255]
    assert first_pixel["other_size.png"] == [1, 2, 3]
    red, green, blue = first_pixel["print.jpg"]
    assert red > 200 and green < 50 and blue < 50


def write_png_header(path, width: int, height: int) -> None:
    """A PNG that declares width×height pixels in a few dozen bytes: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    pixels = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_images_above_the_pixel_limit_are_skipped_before_decoding(tmp_path):
    write_png(tmp_path / "good.png")
    write_png_header(tmp_path / "big.png", 9000, 9000)  # over gentool's limit, under Pillow's
    write_png_header(tmp_path / "bomb.png", 100_000, 100_000)  # over Pillow's own limit too
    with pytest.warns(DataWarning, match=r"skipped 2 of 3 files .*big.png: 9000×9000 pixels"):
        dataset = load_dataset(str(tmp_path), image_size=8)
    assert len(dataset) == 1
    with pytest.raises(DataError, match=r"cannot read image .*big.png: 9000×9000 pixels is more"):
        load_image(tmp_path / "big.png", DataSpec(3, 8, 8))


def test_a_file_that_is_no_image_is_named_as_such_by_its_path(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError) as refused:
        load_image(tmp_path / "notes.png", DataSpec(3, 8, 8))
    assert str(refused.value) == (
        f"{tmp_path / 'notes.png'} is not an image in a format gentool reads "
        "(PNG, JPEG, BMP, GIF, WEBP, TIFF)"
    )


def test_symlinked_folders_are_followed_once_and_link_loops_end(tmp_path):
    root = tmp_path / "data"
    write_png(root / "cats" / "a.png")
    write_png(tmp_path / "elsewhere" / "b.png")
    (root / "dogs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "cats" / "back").symlink_to(root, target_is_directory=True)  # a loop through the root
    (root / "cats" / "self").symlink_to(root / "cats" / "self")  # a link to itself
    (root / "cats" / "x.png").symlink_to(root / "cats" / "y.png")  # two links to each other
    (root / "cats" / "y.png").symlink_to(root / "cats" / "x.png")
    dataset = load_dataset(str(root), image_size=8)
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.labels.tolist() == [0, 1]  # a class of one image is a class


def test_an_npz_holding_pickled_objects_is_refused_without_unpickling(in_tmp):
    marker = in_tmp / "unpickled.marker"

    class LeavesAMarker:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    images = np.empty(2, dtype=object)
    images[:] = [LeavesAMarker(), LeavesAMarker()]
    np.savez(in_tmp / "hostile.npz", images=images)
    with pytest.raises(DataError, match=r"'images' in .* holds Python objects, which gentool"):
        load_dataset(str(in_tmp / "hostile.npz"), image_size=8)
    assert not marker.exists()
