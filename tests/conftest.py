"""Shared fixtures.

Without a GPU, Triton kernels run on the CPU through Triton's interpreter. Triton reads
TRITON_INTERPRET when kernels are decorated, so it is set before gentool loads any kernel.
"""

from __future__ import annotations

import errno
import os
import subprocess
import textwrap
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gentool.registry import PluginEntry, resolve

# The smallest DCGAN that keeps every architectural rule: 16×16 images, narrow layers.
TINY_DCGAN = {"image_size": 16, "latent_dim": 8, "g_features": 8, "d_features": 8}
TINY_DCGAN_ARGS = [arg for key, value in TINY_DCGAN.items() for arg in ("-o", f"{key}={value}")]


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test decodes data into its own cache folder, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("GENTOOL_CACHE", str(cache))
    return cache


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so ./runs is the test's own."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dcgan_entry() -> PluginEntry:
    return resolve("dcgan")


def one_line_error(result, exit_code: int = 1) -> str:
    """The error line that ends a CLI result's output, and no traceback anywhere (lines above
    it, such as epochs done before a fault, are the command's own)."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.output
    return lines[-1]


def entry_for(plugin, base: PluginEntry) -> PluginEntry:
    """A registry entry for a plugin defined in a test, as if a distribution had installed it."""
    return replace(base, name=plugin.name, plugin=plugin, error=None)


def install_fake_distribution(
    site: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    dist: str = "fake-models",
    module: str,
    source: str,
    entry_points: dict[str, str],
    group: str = "gentool.models",
) -> None:
    """Lay out an installed distribution (module + dist-info) on a sys.path entry, its
    `entry_points` in the entry point `group`."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    monkeypatch.syspath_prepend(str(site))


def install_for_subprocess(
    site: Path,
    *,
    module: str,
    source: str,
    entry_points: dict[str, str],
    dist: str = "fake-models",
    group: str = "gentool.models",
) -> dict[str, str]:
    """Lay out a distribution in `site` for a gentool run in another process, leaving this one's
    sys.path as it was; the environment that process needs to see it."""
    monkeypatch = pytest.MonkeyPatch()
    install_fake_distribution(
        site, monkeypatch, dist=dist, module=module, source=source, entry_points=entry_points,
        group=group,
    )  # fmt: skip
    monkeypatch.undo()
    return {**os.environ, "PYTHONPATH": str(site)}


def disk_full_on_call(number: int, write):
    """`write`, except that its `number`th call (from 1) fails as on a full disk."""
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(*args, **kwargs)

    return flaky


@pytest.fixture(scope="session")
def static_rows():
    """Every recorded Triton launch compiled for sm_80 and sm_90, once per session (a minute or
    two): `gentool bench kernels --static` run later in the session reads the same compilations
    from this process's cache instead of compiling them again."""
    pytest.importorskip("triton", reason="compiling for GPUs needs Triton")
    from gentool.kernel_report import static_report
    from gentool.kernels.compiled import TARGETS

    return static_report(list(TARGETS))


@pytest.fixture(scope="session")
def inception():
    """The Inception-v3 feature extractor; the test skips with the reason where it cannot be
    loaded (the `inception` extra is not installed), and fails where GENTOOL_REQUIRE_INCEPTION
    is set (CI installs the extra, so there a skip would hide a broken install)."""
    from gentool.features import FeatureError, load_extractor

    try:
        return load_extractor("inception")
    except FeatureError as error:
        if os.environ.get("GENTOOL_REQUIRE_INCEPTION"):
            pytest.fail(f"GENTOOL_REQUIRE_INCEPTION is set, and: {error}")
        pytest.skip(str(error))


@pytest.fixture
def no_inception_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the `inception` extra were not installed and no weights were pointed at."""
    from gentool import features

    def not_installed(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.delenv(features.INCEPTION_WEIGHTS_VARIABLE, raising=False)
    monkeypatch.setattr(features.metadata, "distribution", not_installed)


@pytest.fixture
def tiny_cpu_training():
    """Settings for training a tiny model on a shared CPU: one thread, as the layers are too small
    to split (and two threads on busy cores wait on each other, tens of times slower), and
    denormal floats flushed to zero, as saturated sigmoids make them and they slow arithmetic
    several times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _mount(*arguments: str) -> None:
    """Run mount(8); skip the test where this machine does not let it (not root, a container
    without the capability): the fault is then not real, and a stand-in would prove little."""
    result = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip()}): run as root for real faults")


@pytest.fixture
def small_disk(tmp_path: Path):
    """small_disk(kib) → an empty folder on a real tmpfs of that size: a disk that fills up."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        _mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder))
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only():
    """read_only(folder): bind-mounts the folder over itself read-only, as a read-only disk is;
    even root cannot write there."""
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        _mount("--bind", str(folder), str(folder))
        mounted.append(folder)
        _mount("-o", "remount,bind,ro", str(folder))
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
