"""gentool: a plugin-based command-line toolkit for image generative models.

This module stays import-light (no torch) so that `gentool --help` starts fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gentool.trained import TrainedModel

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(
    run: str | os.PathLike[str], *, device: str = "auto", raw_weights: bool = False
) -> TrainedModel:
    """A trained model, ready to sample, encode, decode, reconstruct and interpolate.

    `run` is a run folder (``"runs/dcgan/demo"``) or a model's name for its newest run under
    ./runs (``"dcgan"``). `device`: "auto" (the first GPU, else the CPU), "cpu", "cuda" or
    "cuda:N". Runs trained with --ema load their moving average of the weights unless
    `raw_weights`. See docs/python-api.md.
    """
    from gentool.trained import load as load_run

    return load_run(run, device=device, raw_weights=raw_weights)
