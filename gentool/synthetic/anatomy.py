"""Where a cartoon face's parts go: the anchor geometry each part is placed against, drawn at
random."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gentool.synthetic.canvas import Ellipse, Point


@dataclass(frozen=True)
class Face:
    """Anchor geometry that every part of one face is placed against, in unit coordinates."""

    head: Ellipse
    chin_taper: float
    eye_y: float
    eye_dx: float
    eye_rx: float
    eye_ry: float
    mouth_y: float

    @property
    def brow_y(self) -> float:
        return self.eye_y - 1.5 * self.eye_ry

    def outline(self, steps: int = 40) -> list[Point]:
        """The head ellipse with its lower half narrowed towards a chin."""
        head = self.head
        points = []
        for k in range(steps):
            angle = 2 * math.pi * k / steps
            below_centre = max(0.0, math.sin(angle))
            half_width = head.rx * (1.0 - self.chin_taper * below_centre**2)
            points.append(
                (head.cx + half_width * math.cos(angle), head.cy + head.ry * math.sin(angle))
            )
        return points


def sample_face(rng: random.Random) -> Face:
    rx = rng.uniform(0.23, 0.3)
    ry = rx * rng.uniform(1.05, 1.25)
    head = Ellipse(0.5 + rng.uniform(-0.04, 0.04), 0.53 + rng.uniform(-0.03, 0.03), rx, ry)
    eye_rx = rx * rng.uniform(0.15, 0.24)
    return Face(
        head=head,
        chin_taper=rng.uniform(0.0, 0.4),
        eye_y=head.cy + ry * rng.uniform(-0.02, 0.16),
        eye_dx=rx * rng.uniform(0.38, 0.5),
        eye_rx=eye_rx,
        eye_ry=eye_rx * rng.uniform(0.95, 1.45),
        mouth_y=head.cy + ry * rng.uniform(0.5, 0.64),
    )
