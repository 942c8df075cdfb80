"""An optimizer's state as a checkpoint holds it: tensors in safetensors, the rest in run.json.

Both halves come from outside on a resume, so before an optimizer takes them back they are
checked against the optimizer the plugin configured: its groups' settings must be of the kinds
the plugin gave (a learning rate a number, Adam's betas a pair), and each state tensor must fit
its parameter. torch checks neither, and a misfit would fail in the first training step, blamed
on the plugin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from gentool.config import FLOAT32_MAX


def cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies: safetensors refuses tensors that share memory (tied weights)."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}


def flatten_optimizer(
    name: str, state_dict: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into named tensors and a JSON-friendly remainder."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{param_id}.{key}"] = value
            else:
                rest["state"].setdefault(str(param_id), {})[key] = value
    return cpu_copies(tensors), rest


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    name: str,
    rest: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Give `optimizer` the state `flatten_optimizer` split; ValueError says what does not fit."""
    state = _unflatten(name, rest, tensors)
    _check_groups(optimizer.param_groups, state["param_groups"])
    parameters = [param for group in optimizer.param_groups for param in group["params"]]
    for param_id, values in state["state"].items():
        if not 0 <= param_id < len(parameters):
            raise ValueError(f"it has state for parameter {param_id} of {len(parameters)}")
        _check_state(param_id, values, parameters[param_id])
    optimizer.load_state_dict(state)


def _unflatten(
    name: str, rest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {
        int(param_id): dict(values) for param_id, values in rest.get("state", {}).items()
    }
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            param_id, _, state_key = key[len(prefix) :].partition(".")
            state.setdefault(int(param_id), {})[state_key] = value
    # JSON turned tuples (Adam's betas) into lists; give the optimizer back what it stored.
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _check_groups(configured: list[dict[str, Any]], saved: list[Any]) -> None:
    if len(saved) != len(configured):
        raise ValueError(f"it has {len(saved)} parameter groups, the model's {len(configured)}")
    for index, (ours, theirs) in enumerate(zip(configured, saved, strict=True)):
        if not isinstance(theirs, dict):
            raise ValueError(f"parameter group {index} is not a JSON object")
        # A key only one side has comes from another torch version, which fills in defaults.
        for key in (set(ours) & set(theirs)) - {"params"}:
            if _kind(theirs[key]) != _kind(ours[key]):
                raise ValueError(
                    f"parameter group {index} has {key} = {theirs[key]!r}, where the plugin "
                    f"configures {ours[key]!r}"
                )


def _kind(value: object) -> object:
    """What a setting must stay across a save: a finite number of the same sign (a learning
    rate that turned negative would climb the loss), a flag, a pair of numbers..."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return type(value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:  # inf once the step uses it
            return "non-finite"
        return "negative number" if value < 0 else "number"
    if isinstance(value, (list, tuple)):
        return tuple(_kind(item) for item in value)
    return type(value)


def _check_state(param_id: int, values: Mapping[str, Any], parameter: torch.Tensor) -> None:
    for key, value in values.items():
        if not isinstance(value, torch.Tensor):
            continue
        # Every torch optimizer keeps tensors that broadcast to the parameter: the same shape
        # (Adam's moments), a scalar (its step), or factored rows and columns (Adafactor).
        if len(value.shape) > parameter.dim() or any(
            size not in (1, full)
            for size, full in zip(reversed(value.shape), reversed(parameter.shape), strict=False)
        ):
            raise ValueError(
                f"its {key} for parameter {param_id} has shape {tuple(value.shape)}, which does "
                f"not fit the parameter's {tuple(parameter.shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"its {key} for parameter {param_id} holds NaN or infinity")
