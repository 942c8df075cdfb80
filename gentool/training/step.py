"""The step contract: what the trainer lends a model's `training_step`, and one step of it.

This is the part of training that the conformance kit (`gentool.testing`) and the step
benchmarks call too, so that a plugin is checked and timed exactly as it is trained. In automatic
mode the trainer zeroes the gradients, back-propagates and steps the phase's optimizer; in manual
mode the model does so through `ctx.backward` and `ctx.step`, which keep gradient scaling and the
averaging of gradients across processes in the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gentool.api import Batch, ModelPlugin, Phase
from gentool.errors import PluginError, StepOverflow
from gentool.models import calling
from gentool.training.distributed import Ranks, all_agree, average_gradients


class StepContext:
    """The `gentool.api.TrainContext` handed to `training_step`."""

    def __init__(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer],
        device: torch.device,
        *,
        ranks: Ranks | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.optimizers = optimizers
        self.device = device
        self.epoch = 0
        self.global_step = 0
        self.phase: str | None = None
        self.phase_optimizer: str | None = None  # automatic mode: the optimizer of the phase
        self.ranks = ranks or Ranks()
        self.scaler = scaler  # float16 autocast only: scales losses so gradients do not underflow
        self.skipped_non_finite = False  # automatic mode: the last step's loss was not finite

    def enter_phase(self, phase: Phase | None) -> None:
        self.phase = phase.name if phase else None
        self.phase_optimizer = phase.optimizer if phase else None

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        # Under --amp the step runs inside autocast; the backward pass is kept out of it, as
        # PyTorch advises (its ops follow the dtypes the forward pass chose).
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()

    def step(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.ranks.distributed:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            average_gradients(parameters, self.ranks.world_size)
        try:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
        except RuntimeError as error:
            # torch's words when a Python number (lr / (1 − β1), say) does not fit the weights'
            # dtype; any other failure stays the plugin's, whose optimizer this is.
            if "without overflow" not in str(error):
                raise
            raise StepOverflow(
                f"the {name!r} optimizer's step computed a number past float32's range"
            ) from None

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """`tensor` summed or averaged over the processes, in place (see gentool.api)."""
        if op not in ("sum", "mean"):
            raise PluginError(f"ctx.all_reduce takes op 'sum' or 'mean', got {op!r}")
        if self.ranks.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
            if op == "mean":
                tensor /= self.ranks.world_size
        return tensor

    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Whether to step on `loss`: in a distributed run, only when it is finite everywhere,
        so that every process takes the same steps. The step's one copy from the device."""
        finite = bool(torch.isfinite(loss))
        return all_agree(finite) if self.ranks.distributed else finite


def is_manual(model: torch.nn.Module) -> bool:
    """Whether the model steps its own optimizers (`manual_optimization = True`)."""
    return bool(getattr(model, "manual_optimization", False))


# The names metrics.jsonl gives each line's own fields: a logged value named so would overwrite
# them (and a resume, which keeps the lines up to the checkpoint's step, would then drop them).
RESERVED_NAMES = frozenset({"step", "epoch", "phase", "event"})


def train_step(
    model: torch.nn.Module, batch: Batch, context: StepContext, plugin: ModelPlugin
) -> dict[str, torch.Tensor]:
    """One training step; the values it logs, detached, still on the device."""
    model.train()
    if is_manual(model):
        outputs = model.training_step(batch, context)
    else:
        name = context.phase_optimizer or next(iter(context.optimizers))
        optimizer = context.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        outputs = model.training_step(batch, context)
        if not isinstance(outputs, Mapping) or "loss" not in outputs:
            raise PluginError(f"{plugin.name}: training_step returned no 'loss' to optimise")
        loss = outputs["loss"]
        context.skipped_non_finite = not context.loss_is_finite(loss)
        if not context.skipped_non_finite:  # a non-finite loss must not reach the weights
            context.backward(loss)
            context.step(name)
    if not isinstance(outputs, Mapping):
        raise PluginError(f"{plugin.name}: training_step must return a dict of values to log")
    reserved = RESERVED_NAMES.intersection(outputs)
    if reserved:
        raise PluginError(
            f"{plugin.name}: training_step returned {', '.join(sorted(reserved))}, which each "
            "line of metrics.jsonl uses for itself: rename the value"
        )
    return {name: _detached(value) for name, value in outputs.items()}


def _detached(value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.as_tensor(value, dtype=torch.float64)  # a Python number: no device copy needed


def optimizers_of(model: torch.nn.Module, plugin: ModelPlugin) -> dict[str, torch.optim.Optimizer]:
    """The model's optimizers, checked against its optimisation mode and phases."""
    with calling(plugin, "configure_optimizers"):
        optimizers = model.configure_optimizers()
    if (
        not isinstance(optimizers, Mapping)
        or not optimizers
        or not all(
            isinstance(optimizer, torch.optim.Optimizer) for optimizer in optimizers.values()
        )
    ):
        raise PluginError(
            f"{plugin.name}: configure_optimizers must return a non-empty dict of optimizers"
        )
    phases = phases_of(model, plugin)
    if not is_manual(model) and phases and len(optimizers) > 1:
        unnamed = [phase.name for phase in phases if phase.optimizer not in optimizers]
        if unnamed:
            raise PluginError(
                f"{plugin.name}: phase {unnamed[0]!r} must name one of the optimizers "
                f"{', '.join(optimizers)}"
            )
    elif not is_manual(model) and len(optimizers) != 1:
        raise PluginError(
            f"{plugin.name}: automatic optimisation takes one optimizer, got {len(optimizers)}; "
            "name one per phase, or set manual_optimization = True to step several"
        )
    return dict(optimizers)


def phases_of(model: torch.nn.Module, plugin: ModelPlugin) -> list[Phase]:
    """The model's training phases, or [] when it trains in one stage."""
    define = getattr(model, "phases", None)
    if define is None:
        return []
    with calling(plugin, "phases"):
        phases = define()
    if not isinstance(phases, (list, tuple)):
        raise PluginError(f"{plugin.name}: phases() must return a list of Phase objects")
    if not phases or not all(isinstance(phase, Phase) and phase.epochs >= 1 for phase in phases):
        raise PluginError(f"{plugin.name}: phases() must return Phase objects of 1 epoch or more")
    return list(phases)


def phase_at(phases: list[Phase], epoch: int) -> Phase | None:
    """The phase that epoch `epoch` (from 0) belongs to; epochs past the end extend the last."""
    end = 0
    for phase in phases:
        end += phase.epochs
        if epoch < end:
            return phase
    return phases[-1] if phases else None
