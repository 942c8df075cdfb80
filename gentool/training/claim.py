"""A run folder belongs to one training at a time.

A training claims its folder with an exclusive lock on the folder itself (`fcntl.flock` on its
descriptor, released by the kernel when the process ends however it ends; no lock file is left
behind), so a second training of the same folder, or a resume of a run being trained, is refused
instead of interleaving its writes.

A new run's folder is created at its first checkpoint, never before: a run that fails while
loading data or building its model leaves nothing. It is created exclusively, so two trainings
started in the same second pick two folders. `--overwrite` trains the new run in a hidden
sibling folder until it commits a checkpoint of some training (an epoch's, or the one a stop
saves), and only then swaps it with the old run in one atomic exchange (Linux's renameat2;
elsewhere two renames): the old run gives way only to a new one that has trained.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from gentool.checkpoint import RunFolder
from gentool.errors import CheckpointError, GentoolError

try:
    import fcntl
except ImportError:  # not on POSIX: runs are not locked there
    fcntl = None  # type: ignore[assignment]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_STAGING_PREFIX = ".gentool-replacing-"  # short: the run's own name may be 255 bytes long


class StagedRun(RunFolder):
    """The folder a replacement trains in until it takes the place of `replaces`."""

    def __init__(self, path: Path, replaces: Path) -> None:
        super().__init__(path)
        self.replaces = replaces


class RunInUse(GentoolError):
    """Another process is training the run."""


class RunClaim:
    """The claim of one training on its run folder.

    `new`: a new run in `run`, which may already exist as an empty folder (`--run-dir`) and is
    created otherwise; `replace`: `--overwrite` of the run in `run`; `resume`: continue it.
    Only the process that writes the run (rank 0) claims it.
    """

    def __init__(self, run: RunFolder, mode: str, *, dated: bool = False) -> None:
        self.run = run
        self.mode = mode
        self.dated = dated  # a date-named folder: when taken, the next free name will do
        self._name = run.path.name
        self._locks: list[int] = []
        self.staged: StagedRun | None = None  # a replacement that has not taken its place
        if mode in ("resume", "replace"):
            self._lock(run.path)

    def commit_first(self, save: Callable[[RunFolder], None]) -> RunFolder:
        """Create the run folder, lock it and `save` the first checkpoint into it; the folder
        (for a replacement, the hidden folder it trains in until `take_place`).

        If the save fails, the folder is removed again when this claim created it.
        """
        if self.mode == "replace":
            return self._stage(save)
        created = self._create()
        try:
            save(self.run)
        except BaseException:
            if created:
                shutil.rmtree(self.run.path, ignore_errors=True)
            raise
        return self.run

    def take_place(self) -> RunFolder:
        """Swap the staged replacement, which has committed training, with the old run, and
        delete the old one; the run folder."""
        assert self.staged is not None
        staging, self.staged = self.staged.path, None
        _exchange(staging, self.run.path)  # the new run is in place; the old one is `staging`
        shutil.rmtree(staging, ignore_errors=True)
        return self.run

    def release(self) -> None:
        """Let go of the folder; a replacement that never trained is removed."""
        if self.staged is not None:
            shutil.rmtree(self.staged.path, ignore_errors=True)
            self.staged = None
        for descriptor in self._locks:
            os.close(descriptor)
        self._locks.clear()

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _create(self) -> bool:
        """Make (or take, when it is an empty folder) the run folder; whether it was made."""
        while True:
            try:
                self.run.path.mkdir(parents=True)
                created = True
            except FileExistsError:
                if self.dated:  # another training took this name in the same second
                    self._take_next_name()
                    continue
                created = False
            self._lock(self.run.path)
            if not created:
                _check_still_empty(self.run)
            return created

    def _take_next_name(self) -> None:
        suffix = 1
        while (path := self.run.path.parent / f"{self._name}-{suffix}").exists():
            suffix += 1
        self.run = RunFolder(path)

    def _stage(self, save: Callable[[RunFolder], None]) -> RunFolder:
        target = self.run.path
        staging = target.parent / f"{_STAGING_PREFIX}{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self._lock(staging)
        self.staged = StagedRun(staging, replaces=target)
        try:
            save(self.staged)
        except BaseException:
            self.release()
            raise
        return self.staged

    def _lock(self, folder: Path) -> None:
        if not os.access(folder, os.W_OK):
            raise CheckpointError(
                f"cannot write in run folder {folder}: it is read-only; a training needs a "
                "folder it can write"
            )
        if fcntl is None:
            return
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunInUse(
                f"{folder} is being trained by another process: wait for it to finish or stop "
                "it, or choose another --run-dir"
            ) from None
        self._locks.append(descriptor)


def remove_stale_replacements(run_dir: Path) -> None:
    """Delete what an --overwrite killed before its swap left beside `run_dir`: a hidden folder
    holding a replacement that never trained, which no live process holds."""
    for staging in run_dir.parent.glob(f"{_STAGING_PREFIX}*.tmp"):
        if staging.is_dir() and not staging.is_symlink() and not _held(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _held(folder: Path) -> bool:
    if fcntl is None:
        return False
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def _check_still_empty(run: RunFolder) -> None:
    """Between the first check of --run-dir and now, nothing else may have moved in."""
    leftovers = set(run.leftovers())
    others = [path for path in run.path.iterdir() if path not in leftovers]
    if others:
        raise GentoolError(
            f"--run-dir {run.path} is not empty and holds no run: choose a new or empty folder"
        )
    run.remove_leftovers()


def _exchange(first: Path, second: Path) -> None:
    """Swap two folders' names atomically where the system can; else rename one after the other."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = libc_name and getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None)
    if renameat2:
        done = renameat2(
            _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
        )
        if done == 0:
            return
    parked = second.parent / f".{second.name}.replaced-{os.getpid()}.tmp"
    os.rename(second, parked)
    os.rename(first, second)
    os.rename(parked, first)
