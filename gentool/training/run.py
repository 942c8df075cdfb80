"""`run_training`: a request in, a trained run out; what `gentool train` calls."""

from __future__ import annotations

from contextlib import ExitStack

from rich.console import Console

from gentool.checkpoint import RunFolder
from gentool.devices import resolve_device
from gentool.kernels.dispatch import use_backend
from gentool.kernels.preflight import preflight
from gentool.training.distributed import process_group, ranks_from_environment
from gentool.training.loop import TrainSummary, fit
from gentool.training.request import TrainRequest, check_sync_bn, plan_training
from gentool.training.session import open_session


def run_training(request: TrainRequest, console: Console) -> tuple[TrainSummary, RunFolder]:
    """Start a new run or resume one, train it, and say where it is.

    Under torchrun every process calls this with the same request and trains its share of each
    batch; rank 0 alone writes files and draws progress.
    """
    plan = plan_training(request)
    ranks = ranks_from_environment()
    device = resolve_device(request.device)
    check_sync_bn(plan.acceleration, ranks, device.type)
    with (
        process_group(ranks, device) as device,
        use_backend(plan.acceleration.kernels or "auto"),
        ExitStack() as files,
    ):
        preflight(device)  # under --kernels triton: every fused kernel runs here, or fails
        session = open_session(plan, device, ranks, console, files)
        return fit(session), session.run
