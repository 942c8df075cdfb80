"""The device a command computes on, from what `--device` says.

torch is imported when a device is resolved: the command line declares `--device` from this
module, and `gentool --help` must not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gentool.errors import GentoolError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """ "auto" → the first CUDA device when there is one, else the CPU; other names as given,
    once they are known to exist here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GentoolError(f"unknown --device {name!r}: use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise GentoolError(f"--device {name} is not supported: use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise GentoolError(f"--device {name} asked for CUDA, but no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise GentoolError(
            f"--device {name}: there is no such CUDA device ({torch.cuda.device_count()} visible)"
        )
    return device
