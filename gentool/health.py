"""Training health: rules over the metrics history that spot a run going wrong.

Each rule is a pure function of the metrics.jsonl records (oldest first) that returns a
`HealthWarning` or None, so it can be tested on made-up histories. The trainer checks them after
every epoch and prints each warning once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Records = Sequence[Mapping[str, Any]]

WINDOW = 50  # steps averaged before a loss counts as "stuck" or "rising"
D_LOSS_NEAR_ZERO = 0.05  # the discriminator's BCE (real + fake terms) when it wins every time
G_LOSS_GROWTH = 3.0  # the latest window's G loss against its lowest window so far
G_LOSS_FLOOR = 6.0  # ... and at least this much: −log D(G(z)) = 6 means D(G(z)) ≈ 0.0025
DIVERSITY_VERSUS_PEAK = 0.6  # sample diversity fallen below 60 % of its best so far
DIVERSITY_VERSUS_REAL = 0.5  # ... and below half the real images'


@dataclass(frozen=True)
class HealthWarning:
    code: str  # stable name: each is printed once per training invocation
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}"


def discriminator_stuck(records: Records) -> HealthWarning | None:
    """The discriminator's loss has stayed near zero over the last WINDOW steps."""
    recent = _window_means(records, "loss_d")
    if not recent or recent[-1] >= D_LOSS_NEAR_ZERO:
        return None
    return HealthWarning(
        "discriminator-stuck",
        f"the discriminator's loss has stayed near zero (mean {recent[-1]:.3g} over the last "
        f"{WINDOW} steps): it tells real from generated every time, which leaves the generator "
        "little gradient to learn from",
        "hint: lower the discriminator's learning rate (-o lr=...), give it fewer steps, or "
        "check the sample grids for a generator that stopped changing",
    )


def generator_diverging(records: Records) -> HealthWarning | None:
    """The generator's loss has risen far above its best window and keeps high."""
    means = _window_means(records, "loss_g")
    if len(means) < 2:
        return None
    lowest = min(means[:-1])
    latest = means[-1]
    if not (latest > G_LOSS_FLOOR and latest > G_LOSS_GROWTH * max(lowest, 1e-8)):
        return None
    return HealthWarning(
        "generator-diverging",
        f"the generator's loss is rising (mean {latest:.3g} over the last {WINDOW} steps, "
        f"against {lowest:.3g} at its best): the discriminator is running away from it",
        "hint: lower the learning rates, or resume from an earlier, healthier run",
    )


def diversity_collapsing(records: Records) -> HealthWarning | None:
    """The samples' mean pairwise feature distance has fallen well below its peak so far (and,
    where the real images' is known, below half of theirs: ordinary wobbles above that are no
    collapse). A generator that starts out undiverse is not falling, so it is not reported."""
    points = [r for r in records if _finite(r.get("diversity"))]
    if len(points) < 2:
        return None
    latest = points[-1]
    diversity = float(latest["diversity"])
    peak = max(float(r["diversity"]) for r in points[:-1])
    real = latest.get("diversity_real")
    if diversity >= DIVERSITY_VERSUS_PEAK * peak:
        return None
    if _finite(real) and diversity >= DIVERSITY_VERSUS_REAL * float(real):
        return None
    versus_real = f", real images {float(real):.3g}" if _finite(real) else ""
    return HealthWarning(
        "diversity-collapsing",
        f"sample diversity is collapsing (mean feature distance {diversity:.3g} at epoch "
        f"{latest.get('epoch')}, down from {peak:.3g}{versus_real}): the generator draws fewer "
        "and fewer distinct images (mode collapse)",
        "hint: lower the learning rates or the discriminator's steps, and compare the sample "
        "grids of recent epochs",
    )


RULES: tuple[Callable[[Records], HealthWarning | None], ...] = (
    discriminator_stuck,
    generator_diverging,
    diversity_collapsing,
)


def check_health(records: Records) -> list[HealthWarning]:
    """Every rule's warning for this history."""
    return [warning for rule in RULES if (warning := rule(records)) is not None]


def _window_means(records: Records, key: str) -> list[float]:
    """Means of `key` over consecutive WINDOW-step windows, ending with the latest step."""
    values = [float(r[key]) for r in records if "event" not in r and _finite(r.get(key))]
    return [
        sum(values[end - WINDOW : end]) / WINDOW for end in range(len(values), WINDOW - 1, -WINDOW)
    ][::-1]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
