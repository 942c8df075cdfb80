"""Drawing for the built-in sets: a supersampled canvas in unit coordinates, and colours."""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Point = tuple[float, float]
HIGHLIGHT: Color = (255, 255, 255)  # the shine on eyes and hair
_Option = TypeVar("_Option")

# Drawing happens on a canvas at least this many pixels wide, and at least this many times the
# output size, then shrinks by box averaging: that antialiases edges even at 8x8 pixels.
_MIN_CANVAS = 256
_MIN_SUPERSAMPLE = 2


class Canvas:
    """A supersampled RGB surface addressed in unit coordinates ((0, 0) top left, (1, 1) bottom
    right, line widths as fractions of the side)."""

    def __init__(self, size: int, corner_colors: Sequence[Color]) -> None:
        self.size = size
        factor = max(_MIN_SUPERSAMPLE, math.ceil(_MIN_CANVAS / size))
        self.scale = size * factor
        # Bilinearly stretching a 2x2 image of corner colours gives solid fills and linear
        # gradients in any direction from one cheap C call.
        corners = np.array(corner_colors, dtype=np.uint8).reshape(2, 2, 3)
        self._image = Image.fromarray(corners).resize(
            (self.scale, self.scale), Image.Resampling.BILINEAR
        )
        # RGBA drawing mode blends fills that carry an alpha value (blush) into the RGB image.
        self._draw = ImageDraw.Draw(self._image, "RGBA")

    def _box(self, cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        s = self.scale
        return ((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s)

    def _width(self, width: float) -> int:
        return max(1, round(width * self.scale))

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        fill: Color | RGBA | None,
        outline: Color | None = None,
        width: float = 0.0,
    ) -> None:
        line_width = self._width(width) if outline else 0
        self._draw.ellipse(self._box(cx, cy, rx, ry), fill, outline, line_width)

    def polygon(
        self,
        points: Sequence[Point],
        fill: Color,
        outline: Color | None = None,
        width: float = 0.0,
    ) -> None:
        pixels = [(x * self.scale, y * self.scale) for x, y in points]
        line_width = self._width(width) if outline else 0
        self._draw.polygon(pixels, fill, outline, line_width)

    def line(self, points: Sequence[Point], fill: Color, width: float) -> None:
        pixels = [(x * self.scale, y * self.scale) for x, y in points]
        self._draw.line(pixels, fill, self._width(width), joint="curve")

    def arc(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        degrees: tuple[float, float],
        fill: Color,
        width: float,
    ) -> None:
        start, end = degrees
        self._draw.arc(self._box(cx, cy, rx, ry), start, end, fill, self._width(width))

    def chord(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        degrees: tuple[float, float],
        fill: Color,
    ) -> None:
        start, end = degrees
        self._draw.chord(self._box(cx, cy, rx, ry), start, end, fill)

    def to_array(self) -> np.ndarray:
        # With an integer shrink factor BOX is an exact average of each block of subpixels.
        small = self._image.resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(small)


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in unit coordinates; angles run clockwise from +x (y points down)."""

    cx: float
    cy: float
    rx: float
    ry: float

    def point(self, angle: float, stretch: float = 1.0) -> Point:
        return (
            self.cx + stretch * self.rx * math.cos(angle),
            self.cy + stretch * self.ry * math.sin(angle),
        )

    def half_width_at(self, y: float) -> float:
        """Half the width of the ellipse at height y (0 outside it)."""
        return self.rx * math.sqrt(max(0.0, 1.0 - ((y - self.cy) / self.ry) ** 2))

    def arc_above(self, y: float, steps: int = 24) -> list[Point]:
        """Outline of the part above the horizontal line at y, from its left end to its right."""
        # Clamping keeps a sliver of ellipse even when y falls outside it.
        sine = min(0.95, max(-0.95, (y - self.cy) / self.ry))
        first = math.pi - math.asin(sine)
        last = 2 * math.pi + math.asin(sine)
        return [self.point(first + (last - first) * k / steps) for k in range(steps + 1)]


def hsv(hue: float, saturation: float, value: float) -> Color:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(red * 255), round(green * 255), round(blue * 255))


def shade(color: Color, factor: float) -> Color:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    red, green, blue = (min(255, round(channel * factor)) for channel in color)
    return (red, green, blue)


def mix(first: Color, second: Color, weight: float) -> Color:
    red, green, blue = (round(a + (b - a) * weight) for a, b in zip(first, second, strict=True))
    return (red, green, blue)


def jitter(rng: random.Random, color: Color, spread: int = 14) -> Color:
    """Nudge each channel so that palette entries do not repeat exactly across images."""
    red, green, blue = (min(255, max(0, c + rng.randint(-spread, spread))) for c in color)
    return (red, green, blue)


def pick(rng: random.Random, weighted: Sequence[tuple[_Option, float]]) -> _Option:
    """One option, drawn in proportion to its weight."""
    options, weights = zip(*weighted, strict=True)
    return rng.choices(options, weights)[0]


def background_corners(rng: random.Random, first: Color, second: Color) -> list[Color]:
    """Corner colours (top left, top right, bottom left, bottom right) for a solid or linear
    two-tone background."""
    middle = mix(first, second, 0.5)
    return rng.choice(
        [
            [first, first, first, first],
            [first, first, second, second],
            [first, second, first, second],
            [first, middle, middle, second],
        ]
    )
