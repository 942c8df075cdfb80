"""How training steps are computed faster: synchronised BatchNorm, channels-last, torch.compile
and mixed precision. `gentool bench train` times its variants through these same functions, so
that it measures what training runs."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from gentool.errors import TrainingError


@dataclass(frozen=True)
class Acceleration:
    """How the steps are computed. None of it changes what a checkpoint holds, so a run may be
    resumed with other choices."""

    amp: bool = False  # autocast to bfloat16 (float16 and a gradient scaler where it is missing)
    compile: bool = False  # torch.compile each of the model's top-level networks
    channels_last: bool = False  # NHWC weights and batches, which convolutions often prefer
    sync_bn: bool = False  # BatchNorm statistics over the whole global batch (CUDA only)
    kernels: str | None = None  # fused-kernel backend: auto, triton, torch; None: $GENTOOL_KERNELS

    def flags(self) -> list[str]:
        """The `gentool train` flags that ask for these choices: a resume given them again
        computes its steps as the run did."""
        chosen = {
            "--amp": self.amp, "--compile": self.compile,
            "--channels-last": self.channels_last, "--sync-bn": self.sync_bn,
        }  # fmt: skip
        kernels = ["--kernels", self.kernels] if self.kernels not in (None, "auto") else []
        return [flag for flag, on in chosen.items() if on] + kernels


def prepare_model(model: torch.nn.Module, acceleration: Acceleration) -> torch.nn.Module:
    """The model with synchronised BatchNorm and channels-last weights where asked; neither
    changes its state_dict."""
    if acceleration.sync_bn:
        # Converts every BatchNorm, including the one inside ConvTransposeBNReLU, which then
        # computes as the plain composition of its three layers.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if acceleration.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_networks(model: torch.nn.Module) -> None:
    """torch.compile the forward of each of the model's top-level networks, which its training
    step calls. Replacing `forward` keeps the modules, and so the state_dict keys, as they were
    (a wrapping OptimizedModule would prefix them with `_orig_mod.`; and `Module.compile()`
    leaves the forward uncompiled in this PyTorch)."""
    for network in model.children():
        if type(network).forward is not torch.nn.Module.forward:  # containers have no forward
            network.forward = torch.compile(network.forward)


def mixed_precision(
    device: torch.device, enabled: bool
) -> tuple[AbstractContextManager[object], torch.amp.GradScaler | None]:
    """The autocast for --amp: bfloat16 where the device has it, else float16 with a scaler."""
    if not enabled:
        return nullcontext(), None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    if device.type == "cpu" and not cpu_has_bfloat16():
        warnings.warn(
            "--amp computes in bfloat16, for which this CPU has no instructions (AVX512-BF16, "
            "AMX or Arm's BF16): emulated, its steps run several times slower than float32's; "
            "leave --amp out on this machine",
            stacklevel=2,
        )
    return torch.autocast(device.type, dtype=torch.bfloat16), None


def cpu_has_bfloat16() -> bool:
    """Whether oneDNN finds bfloat16 instructions on this CPU. Its probe is a private operator:
    a PyTorch without it is taken to have them, so that --amp is never warned against wrongly."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return probe is None or bool(probe())


@contextmanager
def compile_failures(enabled: bool, model_name: str) -> Iterator[None]:
    """torch.compile fails at the first call (no C compiler, an unsupported op): say so in one
    line and how to go on."""
    try:
        yield
    except Exception as error:
        source = type(error).__module__
        if not enabled or not source.startswith(("torch._dynamo", "torch._inductor")):
            raise
        cause: BaseException = error
        # The compiler's own error, under dynamo's wrapping of it.
        while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
            cause = inner
        lines = str(cause).strip().splitlines()
        detail = lines[0] if lines else ""
        raise TrainingError(
            f"torch.compile failed on {model_name} ({type(cause).__name__}: {detail}); "
            "run without --compile"
        ) from None
