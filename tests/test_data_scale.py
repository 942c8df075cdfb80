"""Data at scale: the mapped cache, restarts that read no image, parallel decoding, zip archives,
flips, and the memory a large set costs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from gentool import image_files
from gentool.data import (
    BatchLoader,
    DataWarning,
    ImageDataset,
    decoding,
    load_dataset,
    write_builtin_set,
    zips,
)
from gentool.errors import DataError


def png_bytes(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_a_restart_on_the_cache_reads_no_image(tmp_path, monkeypatch):
    folder = tmp_path / "faces"
    write_builtin_set("faces", folder, count=12, size=16)
    first = load_dataset(str(folder), image_size=16)
    opened = []
    monkeypatch.setattr(image_files, "read_content", lambda item: opened.append(item))
    again = load_dataset(str(folder), image_size=16)
    assert opened == [] and torch.equal(again.images, first.images)
    assert again.fingerprint == first.fingerprint
    assert mapped_file(again.images).endswith(".pixels")  # mapped, not read into the process


def mapped_file(tensor: torch.Tensor) -> str:
    """The file whose mapping holds `tensor`'s memory, from /proc/self/maps ("" for none)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else ""
    return ""


def test_a_changed_added_or_removed_file_decodes_the_set_again(tmp_path):
    folder = tmp_path / "faces"
    write_builtin_set("faces", folder, count=6, size=8)
    first = load_dataset(str(folder), image_size=8)
    first_images = first.images.clone()
    Image.new("RGB", (8, 8), (250, 0, 0)).save(folder / "3.png")
    changed = load_dataset(str(folder), image_size=8)
    assert changed.images[3, 0, 0, 0] == 250 and changed.fingerprint != first.fingerprint
    Image.new("RGB", (8, 8), (0, 250, 0)).save(folder / "9.png")
    assert len(load_dataset(str(folder), image_size=8)) == 7
    (folder / "9.png").unlink()
    (folder / "3.png").unlink()
    removed = load_dataset(str(folder), image_size=8)
    assert len(removed) == 5 and torch.equal(removed.images[:3], first_images[:3])


def test_worker_processes_decode_what_one_process_does(tmp_path, monkeypatch):
    folder = tmp_path / "shapes"
    write_builtin_set("shapes", folder, count=150, size=12)
    (folder / "circle" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="skipped 1 of 151 files .*broken.png"):
        alone = load_dataset(str(folder), image_size=12)
    alone_images = alone.images.clone()
    monkeypatch.setattr(decoding, "MIN_FILES_FOR_WORKERS", 1)
    monkeypatch.setattr(decoding, "CHUNK_FILES", 16)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "other-cache"))
    pools = []

    class CountedPool(decoding.ProcessPoolExecutor):
        def __init__(self, *arguments, **options):
            pools.append(arguments[0])
            super().__init__(*arguments, **options)

    monkeypatch.setattr(decoding, "ProcessPoolExecutor", CountedPool)
    seen = []
    with pytest.warns(DataWarning, match="skipped 1 of 151 files .*broken.png"):
        pooled = load_dataset(
            str(folder),
            image_size=12,
            track=lambda what, total: lambda done: seen.append((what, total, done)),
        )
    assert torch.equal(pooled.images, alone_images) and torch.equal(pooled.labels, alone.labels)
    assert pooled.fingerprint == alone.fingerprint and pools == [2]
    assert seen[0][1] == 151 and sum(done for _, _, done in seen) == 151


def test_zip_archives_are_data_with_their_class_folders(tmp_path):
    members = {
        f"shapes/{name}/{index}.png": png_bytes((index * 40, 0, shade))
        for shade, name in ((0, "circle"), (200, "square"))
        for index in range(3)
    }
    members |= {"shapes/readme.txt": b"text", "__MACOSX/shapes/._0.png": b"fork"}
    archive = write_zip(tmp_path / "shapes.zip", members)
    dataset = load_dataset(str(archive), image_size=8, needs_labels=True)
    assert str(archive) not in open_files()  # closed again: it may be replaced
    assert dataset.class_names == ("circle", "square")  # the one top folder is no class
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.images[4, 0, 0, 0] == 40 and dataset.images[4, 2, 0, 0] == 200
    assert dataset.fingerprint == load_dataset(str(archive), image_size=8).fingerprint
    replaced = tmp_path / "replaced.zip"
    write_zip(replaced, {name: png_bytes((9, 9, 9)) for name in members})
    replaced.replace(archive)  # the same path, another archive: read anew
    assert load_dataset(str(archive), image_size=8).images[4, 0, 0, 0] == 9


def test_zip_members_named_as_paths_out_or_twice_are_counted_not_dropped(tmp_path):
    members = [
        ("cat/0.png", png_bytes((1, 0, 0))),
        ("dog\\0.png", png_bytes((2, 0, 0))),  # written by a Windows tool
        ("../../evil.png", png_bytes((3, 0, 0))),
        ("/etc/absolute.png", png_bytes((4, 0, 0))),
        ("cat/1.png", png_bytes((5, 0, 0))),
        ("cat/1.png", png_bytes((6, 0, 0))),  # appended later: it replaces the first
        ("./cat/2.png", png_bytes((7, 0, 0))),
        ("cat\\2.png", png_bytes((8, 0, 0))),  # the same name, written another way
    ]
    archive = tmp_path / "odd.zip"
    with zipfile.ZipFile(archive, "w") as writing, pytest.warns(UserWarning, match="Duplicate"):
        for name, content in members:
            writing.writestr(name, content)
    with pytest.warns(DataWarning) as caught:
        dataset = load_dataset(str(archive), image_size=8)
    said = " ".join(str(warning.message) for warning in caught)
    assert "skipped 2 members of" in said and "names are absolute or contain '..'" in said
    assert "skipped 2 members of" in said and "names a later member repeats" in said
    assert dataset.class_names == ("cat", "dog")
    assert dataset.images[:, 0, 0, 0].tolist() == [1, 6, 8, 2]


def test_a_zip_of_a_folder_is_the_same_data_as_the_folder(tmp_path):
    folder = tmp_path / "shapes"
    write_builtin_set("shapes", folder, count=12, size=8)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as writing:
        for path in sorted(folder.rglob("*.png")):
            writing.write(path, path.relative_to(tmp_path))  # inside one wrapping folder
    from_folder = load_dataset(str(folder), image_size=8)
    from_zip = load_dataset(str(archive), image_size=8)
    assert from_zip.fingerprint == from_folder.fingerprint


def test_a_large_file_that_is_no_image_is_not_read_whole(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    write_builtin_set("faces", folder, count=3, size=8)
    (folder / "zeros.png").write_bytes(bytes(3 * 2**20))
    read = []
    read_content = image_files.read_content
    monkeypatch.setattr(
        image_files, "read_content", lambda item: read.append(item.path) or read_content(item)
    )
    with pytest.warns(DataWarning, match="skipped 1 of 4 files .*zeros.png: not an image"):
        assert len(load_dataset(str(folder), image_size=8)) == 3
    assert not any(path.endswith("zeros.png") for path in read)


def test_a_zip_bomb_inflates_no_further_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(zips, "MAX_IMAGE_FILE_BYTES", 2**20)
    bomb = bytes(8 * 2**20)  # 8 MiB of zeros: a few kilobytes compressed
    archive = write_zip(tmp_path / "bomb.zip", {"a.png": png_bytes((1, 2, 3)), "b.png": bomb})
    assert archive.stat().st_size < 50_000
    with pytest.warns(DataWarning, match="skipped 1 image in .* larger than 1 MiB .*b.png"):
        assert len(load_dataset(str(archive), image_size=8)) == 1


def test_a_zip_member_that_lies_about_its_size_is_skipped(tmp_path):
    archive = write_zip(
        tmp_path / "liar.zip",
        {"a.png": png_bytes((1, 2, 3)), "b.png": png_bytes((4, 5, 6))},
        zipfile.ZIP_STORED,
    )
    content = bytearray(archive.read_bytes())
    # b.png's directory entry says 10 bytes: decompression stops there, and its CRC fails.
    with zipfile.ZipFile(archive) as reading:
        info = reading.getinfo("b.png")
    directory = content.rfind(b"PK\x01\x02")
    content[directory + 24 : directory + 28] = (10).to_bytes(4, "little")
    local = info.header_offset
    content[local + 22 : local + 26] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(content))
    with pytest.warns(DataWarning, match="skipped 1 of 2 files .*b.png: could not be read"):
        assert len(load_dataset(str(archive), image_size=8)) == 1


def test_an_archive_that_declares_too_many_members_is_refused_before_listing(tmp_path, monkeypatch):
    monkeypatch.setattr(zips, "MAX_ARCHIVE_MEMBERS", 2)
    archive = write_zip(tmp_path / "many.zip", {f"{i}.png": png_bytes((i, 0, 0)) for i in range(3)})
    with pytest.raises(DataError, match="declares 3 members, more than the 2 gentool lists"):
        load_dataset(str(archive), image_size=8)
    encrypted = write_zip(
        tmp_path / "locked.zip", {f"{i}.png": png_bytes((i, 0, 0)) for i in range(2)}
    )
    content = bytearray(encrypted.read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set "encrypted"
        start = 0
        while (start := content.find(signature, start)) >= 0:
            content[start + flags] |= 1
            start += 4
    encrypted.write_bytes(bytes(content))
    with pytest.raises(
        DataError, match="none of the 2 image files .* could be decoded .*encrypted"
    ):
        load_dataset(str(encrypted), image_size=8)
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="cannot read .*junk.zip.* as a zip archive"):
        load_dataset(str(tmp_path / "junk.zip"), image_size=8)


def open_files() -> set[str]:
    """What this process's descriptors name."""
    names = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            names.add(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:
            continue
    return names


def numbered(count: int) -> ImageDataset:
    """Images whose first row tells their index, and whose right half is brighter."""
    images = torch.zeros(count, 1, 2, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)
    images[:, 0, 1, 2:] = 200
    return ImageDataset(images, None, (), "test", "test")


def flipped_indexes(batch_images: torch.Tensor) -> dict[int, bool]:
    """{image index: whether it came mirrored}, read back from `numbered` pixels."""
    mirrored = batch_images[:, 0, 1, 0] > 100
    index = torch.where(mirrored, batch_images[:, 0, 0, 3], batch_images[:, 0, 0, 0])
    return dict(zip(index.round().int().tolist(), mirrored.tolist(), strict=True))


def test_flips_are_drawn_per_image_and_agree_across_processes_and_resumes():
    dataset, cpu = numbered(40), torch.device("cpu")
    settings = {"device": cpu, "value_range": (0.0, 255.0), "seed": 3, "augment": ("flip",)}
    single = BatchLoader(dataset, 8, **settings)
    seen = {}
    for batch in single.epoch(0):
        seen |= flipped_indexes(batch.images)
    assert len(seen) == 40 and 8 < sum(seen.values()) < 32  # about half, each image once
    halves = [BatchLoader(dataset, 8, rank=rank, world_size=2, **settings) for rank in (0, 1)]
    shards = [{}, {}]
    for rank, loader in enumerate(halves):
        for batch in loader.epoch(0):
            shards[rank] |= flipped_indexes(batch.images)
    assert not shards[0].keys() & shards[1].keys()  # disjoint images
    assert shards[0] | shards[1] == seen  # and flipped as one process flips them
    resumed = {}
    for batch in single.epoch(0, start_step=2):
        resumed |= flipped_indexes(batch.images)
    assert resumed.items() <= seen.items()
    other_epoch = {}
    for batch in single.epoch(1):
        other_epoch |= flipped_indexes(batch.images)
    assert other_epoch != seen
    plain = BatchLoader(dataset, 8, device=cpu, value_range=(0.0, 255.0), seed=3)
    assert not any(
        any(flipped_indexes(batch.images).values()) for batch in plain.epoch(0)
    )  # fmt: skip
    with pytest.raises(DataError, match="unknown augmentation 'rotate': --augment takes flip"):
        BatchLoader(dataset, 8, **{**settings, "augment": ("rotate",)})


def _peak_anon_bytes(command: list[str], environment: dict[str, str]) -> int:
    """The peak RssAnon of a process running `command`, sampled every few milliseconds."""
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0

    def sample() -> None:
        nonlocal peak
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.003)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, errors = process.communicate(timeout=600)
    sampler.join()
    assert process.returncode == 0, errors[-2000:]
    return peak


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_decoding_and_an_epoch_hold_far_less_than_the_data_set(tmp_path):
    """Decoding and training on a set of 147 MB decoded stays within a budget of a third of that
    above the same steps on a tenth of the images: the pixels live in the mapped cache, whose
    pages are the kernel's to drop, not in the process's own memory."""
    count, size = 3000, 128
    folder = tmp_path / "faces"
    write_builtin_set("faces", folder, count=count, size=size)
    budget = count * 3 * size * size // 3
    base = [sys.executable, "-m", "gentool", "train", "ae", "--data", str(folder), "-b", "100"]
    base += ["-o", f"image_size={size}", "-o", "code_dim=8", "-o", "hidden=16", "--device", "cpu"]
    # glibc keeps freed batches for reuse, more or less from run to run; a fixed threshold for
    # returning large blocks makes the peak the memory in use, which is what the data costs.
    environment = {
        **os.environ, "GENTOOL_CACHE": str(tmp_path / "cache"), "MALLOC_MMAP_THRESHOLD_": "1048576"
    }  # fmt: skip
    tenth = [*base, "--limit", str(count // 10), "--epochs", "10", "--run-dir", str(tmp_path / "a")]
    small = _peak_anon_bytes(tenth, environment)
    large = _peak_anon_bytes(
        [*base, "--epochs", "1", "--run-dir", str(tmp_path / "b")], environment
    )
    assert large - small < budget, (large - small, budget)


def test_data_cache_lists_the_entries_and_clears_them(tmp_path):
    from typer.testing import CliRunner

    from gentool.cli import app
    from gentool.data import cache_dir

    folder = tmp_path / "faces"
    write_builtin_set("faces", folder, count=5, size=8)
    load_dataset(str(folder), image_size=8)
    listed = CliRunner().invoke(app, ["data", "cache"])
    assert listed.exit_code == 0, listed.output
    assert "3×8×8" in listed.output and "1 data sets, 1.5 KiB" in listed.output  # and a header
    mine = cache_dir() / "notes" / "mine.txt"  # a file gentool did not write: never removed
    mine.parent.mkdir()
    mine.write_text("keep")
    cleared = CliRunner().invoke(app, ["data", "cache", "--clear"])
    assert cleared.exit_code == 0 and "removed 1 data sets (1.5 KiB)" in cleared.output
    assert sorted(path.name for path in cache_dir().rglob("*")) == ["mine.txt", "notes"]
    load_dataset(str(folder), image_size=8)
    blocking = cache_dir() / f"folder-{'0' * 32}.v5.json"  # a folder named as a header is
    blocking.mkdir()
    partly = CliRunner().invoke(app, ["data", "cache", "--clear"])
    assert partly.exit_code == 1 and "removed 1 data sets" in partly.output
    assert "could not remove 1 files named as cache entries (first: folder-0000" in partly.output
    assert blocking.is_dir() and len(list(cache_dir().glob("*.pixels"))) == 0
    blocking.rmdir()
    again = CliRunner().invoke(app, ["data", "cache", "--clear"])
    assert again.exit_code == 0 and "no data set is cached in" in again.output


def test_two_decodings_of_one_set_at_once_leave_a_sound_entry(tmp_path, monkeypatch):
    """As the processes of a --nproc run on a cold cache do: each writes the entry; the one that
    puts its pixel file in place last must also be the one whose header names it."""
    import warnings

    from gentool.data import pixels

    folder = tmp_path / "faces"
    write_builtin_set("faces", folder, count=6, size=8)
    in_place, go_on = threading.Event(), threading.Event()
    seal_of = pixels.seal_of

    def slow_seal(header):  # the first writer stops between its pixel file and its header
        if threading.current_thread().name == "first":
            in_place.set()
            go_on.wait(10)
        return seal_of(header)

    monkeypatch.setattr(pixels, "seal_of", slow_seal)
    threads = [
        threading.Thread(target=load_dataset, args=(str(folder),), kwargs={"image_size": 8},
                         name=name)
        for name in ("first", "second")
    ]  # fmt: skip
    threads[0].start()
    assert in_place.wait(10)
    threads[1].start()
    threads[1].join(1)  # unlocked, the second writer would be done by now
    go_on.set()
    for thread in threads:
        thread.join(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(load_dataset(str(folder), image_size=8)) == 6
