"""The built-in labelled shapes: one filled shape a picture, on a contrasting background."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from gentool.synthetic.canvas import Canvas, Color, Point, hsv

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")


_STAR_INNER_RADIUS = 0.42
_CROSS_ARM_HALF_WIDTH = 0.3
_RING_THICKNESS = 0.34


def draw_shape(rng: random.Random, size: int, shape: str) -> np.ndarray:
    color = hsv(rng.random(), rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))
    canvas = Canvas(size, [_contrasting_background(rng, color)] * 4)
    # The circle around the shape spans 34 to 70% of the frame and stays inside it.
    radius = rng.uniform(0.17, 0.35)
    cx, cy = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
    if shape == "circle":
        canvas.ellipse(cx, cy, radius, radius, color)
    elif shape == "ring":
        canvas.ellipse(cx, cy, radius, radius, None, color, width=radius * _RING_THICKNESS)
    else:
        angle = rng.uniform(0.0, 2 * math.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        canvas.polygon(
            [
                (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
                for x, y in _SHAPE_OUTLINES[shape]
            ],
            color,
        )
    return canvas.to_array()


def _contrasting_background(rng: random.Random, color: Color) -> Color:
    """A dark or pale background, whichever keeps the shape's brightness far from it."""
    luma = (0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]) / 255
    dark = luma > 0.6 or (luma > 0.4 and rng.random() < 0.5)
    if dark:
        return hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3))
    return hsv(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.88, 1.0))


def _radial_outline(radii: Sequence[float]) -> list[Point]:
    """Vertices at the given distances from the centre, evenly spaced, the first straight up."""
    step = 2 * math.pi / len(radii)
    return [
        (radius * math.cos(k * step - math.pi / 2), radius * math.sin(k * step - math.pi / 2))
        for k, radius in enumerate(radii)
    ]


def _plus_sign(arm_half_width: float) -> list[Point]:
    """Unit-radius plus sign: the corners of the top arm, turned a quarter at a time."""
    arm = [(-arm_half_width, -1.0), (arm_half_width, -1.0), (arm_half_width, -arm_half_width)]
    points: list[Point] = []
    for _ in range(4):
        points.extend(arm)
        arm = [(-y, x) for x, y in arm]
    return points


# Unit-radius outlines of the polygonal classes, rotated and scaled per image.
_SHAPE_OUTLINES: dict[str, list[Point]] = {
    "square": _radial_outline([1.0] * 4),
    "triangle": _radial_outline([1.0] * 3),
    "star": _radial_outline([1.0, _STAR_INNER_RADIUS] * 5),
    "cross": _plus_sign(_CROSS_ARM_HALF_WIDTH),
}
