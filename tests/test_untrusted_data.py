"""Data sources and caches as untrusted input: what decides the decoded content is all in its
fingerprint, a cache entry is verified before use, and sizes are checked before allocation."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gentool.api import DataSpec
from gentool.cli import app
from gentool.data import DataWarning, cache_dir, load_dataset, load_image, write_builtin_set
from gentool.errors import DataError
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "-b", "4", "--device", "cpu", "--epochs", "1", "--limit", "8"]


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def squares(count: int = 8, size: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_the_same_images_with_other_labels_or_names_are_other_data(tmp_path):
    images = squares()
    first = load_dataset(
        str(write_npz(tmp_path / "a.npz", images=images, labels=np.arange(8) % 2)),
        image_size=8,
    )
    relabelled = load_dataset(
        str(write_npz(tmp_path / "a.npz", images=images, labels=(np.arange(8) + 1) % 2)),
        image_size=8,
    )
    renamed = load_dataset(
        str(
            write_npz(
                tmp_path / "a.npz",
                images=images,
                labels=(np.arange(8) + 1) % 2,
                class_names=np.array(["cat", "dog"]),
            )
        ),
        image_size=8,
    )
    assert relabelled.labels.tolist() == ((np.arange(8) + 1) % 2).tolist()  # not the cached ones
    assert renamed.class_names == ("cat", "dog")
    assert len({first.fingerprint, relabelled.fingerprint, renamed.fingerprint}) == 3


def test_the_same_bytes_in_another_shape_are_other_data(tmp_path):
    images = squares(8, 8)
    wide = load_dataset(str(write_npz(tmp_path / "a.npz", images=images)), image_size=None)
    reshaped = images.reshape(2, 16, 16, 3)
    tall = load_dataset(str(write_npz(tmp_path / "a.npz", images=reshaped)), image_size=None)
    assert tall.images.shape == (2, 3, 16, 16) and wide.fingerprint != tall.fingerprint


def test_resuming_on_data_that_moved_says_how_to_point_to_it(in_tmp):
    write_npz(in_tmp / "d.npz", images=squares(16, 16))
    arguments = ["-o", "image_size=16", "-b", "8", "--device", "cpu", "--epochs", "1"]
    first = runner.invoke(app, ["train", "ae", "--data", "d.npz", *arguments, "--run-dir", "run"])
    assert first.exit_code == 0, first.output
    (in_tmp / "d.npz").rename(in_tmp / "moved.npz")
    resume = ["train", "ae", "--resume", "--run-dir", "run", "--epochs", "2"]
    result = runner.invoke(app, resume)
    assert result.exit_code == 1
    assert "run was trained on 'd.npz', which does not exist now" in result.output
    assert "--resume --data NEW_PATH" in result.output
    empty = runner.invoke(app, [*resume, "--data", ""])  # an unset variable: not the run's data
    assert empty.exit_code == 1 and "--data is empty" in empty.output
    assert runner.invoke(app, [*resume, "--data", "moved.npz"]).exit_code == 0


def test_resuming_on_relabelled_data_is_refused(in_tmp):
    images = squares(16, 16)
    write_npz(in_tmp / "d.npz", images=images, labels=np.arange(16) % 2)
    arguments = ["-o", "image_size=16", "-b", "8", "--device", "cpu", "--epochs", "1"]
    assert runner.invoke(app, ["train", "cgan", "--data", "d.npz", *arguments, "--run-dir", "run"])
    write_npz(in_tmp / "d.npz", images=images, labels=(np.arange(16) + 1) % 2)
    result = runner.invoke(app, ["train", "cgan", "--resume", "--run-dir", "run", "--epochs", "2"])
    assert result.exit_code == 1 and "differs from what run was trained on" in result.output


def only_cache_entry() -> tuple[Path, Path]:
    """The cache's one entry: (its header, its pixels)."""
    (header,) = cache_dir().glob("*.json")
    return header, header.with_suffix(".pixels")


def rewrite_header(header: Path, **changes) -> None:
    """Edit fields of an entry's header, as damage would: its seal no longer matches."""
    header.write_text(json.dumps({**json.loads(header.read_text()), **changes}))


def forge_header(header: Path, **changes) -> None:
    """Edit fields of an entry's header and seal it again, as only a deliberate hand would: what
    it says must then still fit its pixel file."""
    from gentool.data.cache import seal_of

    edited = {**json.loads(header.read_text()), **changes}
    header.write_text(json.dumps({**edited, "seal": seal_of(edited)}))


def fewer_images(header: Path, pixels: Path, count: int) -> None:
    """The entry cut to its first `count` images, its header forged to say so."""
    shape = json.loads(header.read_text())["shape"]
    size = count * shape[1] * shape[2] * shape[3]
    pixels.write_bytes(pixels.read_bytes()[:size])
    forge_header(header, shape=[count, *shape[1:]], bytes=size)


def zero_pixels(header: Path, pixels: Path) -> None:
    status = pixels.stat()
    pixels.write_bytes(bytes(status.st_size))
    os.utime(pixels, ns=(status.st_atime_ns, status.st_mtime_ns))  # as if bits had rotted


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda header, pixels: pixels.write_bytes(pixels.read_bytes()[:-1]), "holds 511 bytes"),
        (lambda header, pixels: pixels.write_bytes(pixels.read_bytes() * 2), "holds 1024 bytes"),
        (lambda header, pixels: forge_header(header, shape=[8, 3, 8]), "is not that of images"),
        (lambda header, pixels: forge_header(header, shape=[8, 2, 8, 8]), "is not that of"),
        (lambda header, pixels: forge_header(header, bytes=7), "declares 7 bytes for 512"),
        (lambda header, pixels: forge_header(header, labelled="yes"), "whether it holds labels"),
        (lambda header, pixels: forge_header(header, notes="x"), "are not lists"),
        (lambda header, pixels: header.write_text("{"), "Expecting property name"),
        (lambda header, pixels: pixels.unlink(), "No such file"),
        # Edits that keep the byte count: the header's seal of what it says no longer matches.
        (lambda header, pixels: rewrite_header(header, shape=[16, 1, 8, 4]), "seal does not"),
        (lambda header, pixels: rewrite_header(header, class_names=["x"]), "seal does not"),
        (lambda header, pixels: rewrite_header(header, notes=["forged"]), "seal does not"),
        # A header sealed again over a pixel file that is not the one it was written with.
        (lambda header, pixels: fewer_images(header, pixels, 4), "not the file its header was"),
    ],
)
def test_a_damaged_cache_entry_is_decoded_again(tmp_path, damage, why):
    source = str(write_npz(tmp_path / "a.npz", images=squares()[..., :1]))
    original = load_dataset(source, image_size=8).images.clone()  # the entry's pixels are mapped
    damage(*only_cache_entry())
    with pytest.warns(DataWarning, match=f"is damaged .*{why}.*decoding again"):
        again = load_dataset(source, image_size=8)
    assert torch.equal(again.images, original)
    assert torch.equal(load_dataset(source, image_size=8).images, original)  # written again


def test_labels_that_do_not_index_the_class_names_are_damage(tmp_path):
    source = str(write_npz(tmp_path / "a.npz", images=squares(), labels=np.arange(8) % 2))
    original = load_dataset(source, image_size=8)
    _, pixels = only_cache_entry()
    status = pixels.stat()
    content = bytearray(pixels.read_bytes())
    content[-8:] = (5).to_bytes(8, "little")  # the last label, past the two classes
    pixels.write_bytes(bytes(content))
    os.utime(pixels, ns=(status.st_atime_ns, status.st_mtime_ns))  # as if bits had rotted
    with pytest.warns(DataWarning, match="is damaged .*labels do not index its class names"):
        again = load_dataset(source, image_size=8)
    assert torch.equal(again.labels, original.labels)


def test_verify_data_reads_the_pixels_and_the_files_again(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(folder / f"{index}.png")
        os.utime(folder / f"{index}.png", ns=(10**18, 10**18))  # long settled
    original = load_dataset(str(folder), image_size=8)
    pixels_before = original.images.clone()  # mapped from the entry, which is damaged below
    header, pixels = only_cache_entry()
    zero_pixels(header, pixels)
    quick = load_dataset(str(folder), image_size=8)  # sizes and layout only: not noticed
    assert quick.images.sum() == 0
    with pytest.warns(DataWarning, match="is damaged .*SHA-256 mismatch.*decoding again"):
        verified = load_dataset(str(folder), image_size=8, verify=True)
    assert torch.equal(verified.images, pixels_before)
    # A file rewritten and its modification time set back: its change time, which no one can
    # set, and (so soon after the change) its content are in the key too.
    Image.new("RGB", (8, 8), (0, 0, 250)).save(folder / "1.png")
    os.utime(folder / "1.png", ns=(10**18, 10**18))
    changed = load_dataset(str(folder), image_size=8)
    assert changed.images[1, 2, 0, 0] == 250 and changed.fingerprint != original.fingerprint
    # What --verify-data compares besides the pixels: the digest of the files' bytes.
    (header,) = [
        path for path in cache_dir().glob("*.json")
        if json.loads(path.read_text())["fingerprint"] == changed.fingerprint
    ]  # fmt: skip
    forge_header(header, source_digest="0" * 64)
    with pytest.warns(DataWarning, match="is damaged .*its files changed since it was cached"):
        load_dataset(str(folder), image_size=8, verify=True)


def test_an_entry_copied_under_another_data_sets_key_is_decoded_again(tmp_path):
    first = str(write_npz(tmp_path / "a.npz", images=squares()))
    second = str(write_npz(tmp_path / "b.npz", images=squares()[::-1].copy()))
    load_dataset(first, image_size=8)
    (first_header,) = cache_dir().glob("*.json")
    original = load_dataset(second, image_size=8).images.clone()
    (second_header,) = set(cache_dir().glob("*.json")) - {first_header}
    first_pixels, second_pixels = (
        first_header.with_suffix(".pixels"),
        second_header.with_suffix(".pixels"),
    )
    second_key = json.loads(second_header.read_text())["key"]

    def copied_with_its_key_edited() -> None:
        second_header.write_bytes(first_header.read_bytes())
        second_pixels.write_bytes(first_pixels.read_bytes())
        rewrite_header(second_header, key=second_key)

    copies = [
        ("another data set's entry", lambda: second_header.write_bytes(first_header.read_bytes())),
        ("seal does not match", copied_with_its_key_edited),
        # The pixel files swapped, headers left: each header names the file it was written with.
        ("not the file its header was written with", lambda: swap(first_pixels, second_pixels)),
    ]
    for why, copy in copies:
        load_dataset(second, image_size=8)  # a sound entry again
        copy()
        with pytest.warns(DataWarning, match=f"is damaged .*{why}"):
            again = load_dataset(second, image_size=8)
        assert torch.equal(again.images, original)


def swap(first: Path, second: Path) -> None:
    spare = first.with_name("spare")
    first.rename(spare)
    second.rename(first)
    spare.rename(second)


def test_an_entry_with_an_endless_note_is_decoded_again(tmp_path):
    source = str(write_npz(tmp_path / "a.npz", images=squares()))
    original = load_dataset(source, image_size=8)
    header, _ = only_cache_entry()
    forge_header(header, notes=["x" * 10**6])
    with pytest.warns(DataWarning, match="is damaged .*not short strings"):
        again = load_dataset(source, image_size=8)
    assert torch.equal(again.images, original.images)


def test_a_cache_entry_of_another_kind_of_file_is_decoded_again(tmp_path):
    source = str(write_npz(tmp_path / "a.npz", images=squares()))
    original = load_dataset(source, image_size=8)
    _, pixels = only_cache_entry()
    pixels.unlink()
    pixels.mkdir()  # a folder where the pixels were: damage, then written past with a warning
    with pytest.warns(DataWarning, match="could not cache"):
        again = load_dataset(source, image_size=8)
    assert torch.equal(again.images, original.images)


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(in_tmp, monkeypatch):
    (in_tmp / "cache-file").write_text("not a folder")
    monkeypatch.setenv("GENTOOL_CACHE", str(in_tmp / "cache-file"))
    write_npz(in_tmp / "d.npz", images=squares(8, 16))
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--data", "d.npz", "--run-dir", "r2"])
    assert result.exit_code == 0, result.output
    assert "warning: could not cache the decoded 'd.npz'" in result.output


def test_a_full_or_read_only_cache_costs_a_warning(in_tmp, monkeypatch, small_disk, read_only):
    source = str(write_npz(in_tmp / "d.npz", images=squares(64, 32)))
    monkeypatch.setenv("GENTOOL_CACHE", str(small_disk(40)))
    with pytest.warns(DataWarning, match="could not cache .*No space left on device"):
        assert len(load_dataset(source, image_size=32)) == 64
    # A disk that fills after some chunks of a folder were written: those are kept, in memory.
    folder = in_tmp / "faces"
    write_builtin_set("faces", folder, count=300, size=8)
    whole = load_dataset(str(folder), image_size=8).images.clone()
    monkeypatch.setenv("GENTOOL_CACHE", str(small_disk(40)))
    with pytest.warns(DataWarning, match="could not cache .*No space left on device"):
        assert torch.equal(load_dataset(str(folder), image_size=8).images, whole)
    locked = in_tmp / "locked"
    (locked / "data").mkdir(parents=True)
    monkeypatch.setenv("GENTOOL_CACHE", str(read_only(locked)))
    with pytest.warns(DataWarning, match="could not cache .*Read-only file system"):
        assert len(load_dataset(source, image_size=32)) == 64


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((64, 0, 0, 3), np.uint8)}, "expected N ≥ 1 images of 1 to 8192"),
        ({"images": np.zeros((0, 8, 8, 3), np.uint8)}, "expected N ≥ 1 images"),
        (
            {"images": squares(2), "labels": np.array([0, 2**63 + 5], dtype=np.uint64)},
            "must be class indexes ≥ 0 and < 100000, found 9223372036854775813",
        ),
        ({"images": squares(2), "labels": np.array([0, 10**12])}, "found 1000000000000"),
        (
            {"images": squares(2), "labels": np.array([0, 1]), "class_names": np.array([1, 2])},
            "'class_names' in .* must list at least 2 names as strings",
        ),
    ],
)
def test_arrays_that_decode_to_nothing_or_to_too_much_are_refused(tmp_path, arrays, message):
    source = str(write_npz(tmp_path / "bad.npz", **arrays))
    with pytest.raises(DataError, match=message):
        load_dataset(source, image_size=None)


def test_an_npz_header_that_declares_more_than_the_archive_holds_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 64, 64, 3)}
    )
    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as archive:
        archive.writestr("images.npy", header.getvalue() + b"\0" * 64)
    started = time.perf_counter()
    with pytest.raises(DataError, match="declares 12288000000000000 bytes but the archive holds"):
        load_dataset(str(tmp_path / "liar.npz"), image_size=None)
    assert time.perf_counter() - started < 5


def test_a_huge_sparse_file_among_the_images_is_skipped_unread(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(folder / f"{index}.png")
    with (folder / "huge.png").open("wb") as file:
        file.truncate(2**40)  # a terabyte that takes no disk
    started = time.perf_counter()
    with pytest.warns(DataWarning, match="skipped 1 image file larger than 1024 MiB"):
        dataset = load_dataset(str(folder), image_size=8)
    assert len(dataset) == 4 and time.perf_counter() - started < 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-o", "image_size=1073741824"], "image_size 1073741824 is out of reach"),
        (["-o", "latent_dim=10000000000"], "of weights) would take"),
        (["-o", "g_features=1000000"], "of weights) would take"),
        (["--limit", "1000000000000"], "1000000000000 built-in images of 16×16 would take"),
    ],
)
def test_sizes_from_options_are_checked_before_anything_is_allocated(in_tmp, arguments, message):
    started = time.perf_counter()
    result = runner.invoke(app, ["train", "dcgan", *TINY, *arguments])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not (in_tmp / "runs").exists()
    assert time.perf_counter() - started < 30


SIZE_CHECK_PROBE = """
import sys
import torch
from gentool.api import DataSpec
from gentool.models import _check_size
from gentool.plugins.dcgan import plugin
_check_size(plugin, plugin.parse_config({}), DataSpec(3, 64, 64), torch.device("cpu"))
print("torch._dynamo" in sys.modules)
"""


def test_the_size_check_builds_without_importing_the_reference_ops():
    # normal_ on a meta tensor imports PyTorch's Python reference ops and dynamo: 1.2 to 1.7 s
    # of every DCGAN start, for values a meta tensor does not hold.
    result = subprocess.run(
        [sys.executable, "-c", SIZE_CHECK_PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_names_that_are_not_utf8_train_and_show_with_escapes(in_tmp):
    root = os.fsencode(in_tmp / "data")
    for klass in (b"caf\xe9", b"\xff\xfeclass"):
        os.makedirs(os.path.join(root, klass))
        for index in range(4):
            name = os.path.join(root, klass, b"image-\xe9%d.png" % index)
            Image.new("RGB", (16, 16), (index * 50, 0, 0)).save(os.fsdecode(name))
    dataset = load_dataset(str(in_tmp / "data"), image_size=16)
    assert dataset.class_names == ("\\xff\\xfeclass", "caf\\xe9")
    result = runner.invoke(
        app, ["train", "cgan", "-o", "image_size=16", "--data", "data", "-b", "4", "--epochs", "1",
              "--device", "cpu", "--run-dir", "run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_file_that_fails_to_decode_in_an_unforeseen_way_is_skipped(tmp_path, monkeypatch):
    # No file at hand makes Pillow raise outside its usual errors; a decoder that does stands in.
    from gentool import image_files

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (index, index, index)).save(folder / f"{index}.png")
    fit_image = image_files.fit_image

    def fit_or_fail(image, size):
        if image.getpixel((0, 0)) == (1, 1, 1):
            raise ZeroDivisionError("a decoder's own bug")
        return fit_image(image, size)

    monkeypatch.setattr(image_files, "fit_image", fit_or_fail)
    with pytest.warns(DataWarning, match="skipped 1 of 3 files .*a decoder's own bug"):
        assert len(load_dataset(str(folder), image_size=8)) == 2


def test_any_failure_to_decode_one_file_skips_that_file(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8)).save(folder / f"{index}.png")
    # A TIFF that Pillow opens and then fails to decode with a compression it lacks.
    Image.new("RGB", (8, 8)).save(folder / "odd.tif", compression="tiff_lzw")
    content = bytearray((folder / "odd.tif").read_bytes())
    content[content.index(b"\x03\x01\x03\x00") + 8] = 0x09  # compression tag → an unknown code
    (folder / "odd.tif").write_bytes(bytes(content))
    with pytest.warns(DataWarning, match="skipped 1 of 4 files that could not be decoded"):
        assert len(load_dataset(str(folder), image_size=8)) == 3


def test_a_special_file_as_config_or_image_is_refused_without_blocking(in_tmp):
    os.mkfifo(in_tmp / "pipe.toml")
    result = runner.invoke(app, ["train", "dcgan", "--config", "pipe.toml"])
    assert (
        result.exit_code == 1
        and "cannot read config file pipe.toml: not a regular file" in result.output
    )
    os.mkfifo(in_tmp / "pipe.png")
    with pytest.raises(DataError, match="pipe.png is not a regular file"):
        load_image(in_tmp / "pipe.png", DataSpec(3, 8, 8))


def test_data_make_into_a_file_is_one_line(in_tmp):
    (in_tmp / "taken").write_text("mine")
    result = runner.invoke(app, ["data", "make", "faces", "taken", "--n", "4"])
    assert result.exit_code == 1 and "taken is a file" in result.output
    assert (in_tmp / "taken").read_text() == "mine"


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 16 16
newpath 0 0 moveto 16 16 lineto stroke
showpage
"""


def test_an_image_of_another_format_never_runs_a_program(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8)).save(folder / f"{index}.png")
    (folder / "drawing.png").write_bytes(EPS)  # PostScript, which Pillow renders with Ghostscript
    bin_folder, marker = tmp_path / "bin", tmp_path / "ghostscript-ran"
    bin_folder.mkdir()
    (bin_folder / "gs").write_text(f"#!/bin/sh\ntouch {marker}\necho 10.02.1\n")
    (bin_folder / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    with pytest.warns(DataWarning, match="skipped 1 of 4 files"):
        assert len(load_dataset(str(folder), image_size=8)) == 3
    assert not marker.exists()


def test_a_file_rewritten_while_the_data_is_read_is_never_cached_as_the_old(tmp_path, monkeypatch):
    from gentool import image_files

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(folder / f"{index}.png")
    read_content = image_files.read_content

    def rewrite_then_read(item):  # the file changes after it was listed
        if item.path.endswith("1.png"):
            Image.new("RGB", (8, 8), (250, 250, 250)).save(item.path)
        return read_content(item)

    monkeypatch.setattr(image_files, "read_content", rewrite_then_read)
    with pytest.raises(DataError, match="1.png changed while the data was read: run again"):
        load_dataset(str(folder), image_size=8)
    assert list(cache_dir().iterdir()) == []
    monkeypatch.undo()
    settled = load_dataset(str(folder), image_size=8)
    assert settled.images[1, 0, 0, 0] == 250


def test_a_folder_nested_deeper_than_python_recurses_is_searched_to_a_depth(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(folder / f"{index}.png")
    levels = 1200  # deeper than Python's recursion limit: os.makedirs and rmtree would recurse
    descriptors = [os.open(folder, os.O_RDONLY)]
    for _ in range(levels):
        os.mkdir("d", dir_fd=descriptors[-1])
        descriptors.append(os.open("d", os.O_RDONLY, dir_fd=descriptors[-1]))
    try:
        with pytest.warns(DataWarning, match="skipped the folders more than 32 levels down"):
            assert len(load_dataset(str(folder), image_size=8)) == 3
    finally:
        for parent, child in zip(descriptors[-2::-1], descriptors[:0:-1], strict=True):
            os.close(child)
            os.rmdir("d", dir_fd=parent)
        os.close(descriptors[0])


def test_a_run_whose_data_was_identified_by_an_earlier_gentool_says_so(in_tmp):
    write_npz(in_tmp / "d.npz", images=squares(16, 16))
    arguments = ["-o", "image_size=16", "-b", "8", "--device", "cpu", "--epochs", "1"]
    first = runner.invoke(app, ["train", "ae", "--data", "d.npz", *arguments, "--run-dir", "run"])
    assert first.exit_code == 0, first.output
    record = json.loads((in_tmp / "run" / "run.json").read_text())
    record["data"]["fingerprint"] = "npz:" + "0" * 32  # as gentool wrote it before
    (in_tmp / "run" / "run.json").write_text(json.dumps(record))
    result = runner.invoke(app, ["train", "ae", "--resume", "--run-dir", "run", "--epochs", "2"])
    assert "was trained by an earlier gentool" in result.output and result.exit_code == 1
