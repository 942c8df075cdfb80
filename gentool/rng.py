"""Random generator state: captured into run.json, restored on resume, kept around side work.

An exact resume needs the generators exactly where the checkpoint left them, so this module is
the one place that reads or sets them: torch's CPU generator and, once CUDA is in use, every CUDA
device's. States travel as base64 text, which JSON holds.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from gentool.errors import CheckpointError


def capture() -> dict[str, Any]:
    """This process's generator states, JSON-friendly."""
    state: dict[str, Any] = {"torch": _encode(torch.get_rng_state())}
    if _cuda_in_use():
        state["cuda"] = [_encode(device_state) for device_state in torch.cuda.get_rng_state_all()]
    return state


def restore(state: Mapping[str, Any]) -> None:
    """Set the generators to a state `capture` returned."""
    if "torch" in state:
        torch.set_rng_state(_decode(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        states = [_decode(device_state) for device_state in state["cuda"]]
        try:
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
        except RuntimeError as error:  # check_state cannot try them where there is no CUDA
            raise CheckpointError(f"a saved CUDA generator state does not fit: {error}") from None


def check_state(state: object, *, extra: tuple[str, ...] = ()) -> None:
    """Raise ValueError unless `state` is what `capture` returns, with the keys `extra` besides
    (run.json is untrusted). The CPU state is set on a spare generator, which checks its content
    as well as its length; CUDA states can only be checked where CUDA is."""
    if not isinstance(state, Mapping):
        raise ValueError("not a JSON object")
    unknown = sorted(set(state) - {"torch", "cuda", *extra})
    if unknown:
        raise ValueError(f"it has an unknown generator {unknown[0]!r}")
    if "torch" in state:
        try:
            torch.Generator().set_state(_as_tensor(_checked_decode(state["torch"])))
        except RuntimeError:
            raise ValueError("the CPU generator state is not one torch wrote") from None
    cuda = state.get("cuda", [])
    if not isinstance(cuda, list):
        raise ValueError("'cuda' is not a list")
    for device_state in cuda:
        _checked_decode(device_state)


@contextmanager
def preserved() -> Iterator[None]:
    """Whatever draws random numbers inside the block leaves the generators as it found them:
    work done beside training (sample grids, evaluations) must not change what it trains next."""
    devices = range(torch.cuda.device_count()) if _cuda_in_use() else []
    with torch.random.fork_rng(devices=devices):
        yield


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return _as_tensor(base64.b64decode(text))


def _as_tensor(content: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(content), dtype=torch.uint8)


def _checked_decode(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("a generator state is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("a generator state is not base64 text") from None
