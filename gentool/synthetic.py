"""Built-in image data sets drawn procedurally, so demos and tests need no download.

Every image is drawn from its own random stream keyed by (seed, index): any slice of a set can be
regenerated on its own and comes out byte-identical from run to run.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageDraw

# Bump when the pictures change, so caches keyed on these versions are rebuilt.
FACES_VERSION = 1
SHAPES_VERSION = 1

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")

MIN_SIZE = 8
MAX_SIZE = 1024

# Drawing happens on a canvas at least this many pixels wide, and at least this many times the
# output size, then shrinks by box averaging: that antialiases edges even at 8x8 pixels.
_MIN_CANVAS = 256
_MIN_SUPERSAMPLE = 2

Color = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Point = tuple[float, float]
_Option = TypeVar("_Option")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def make_faces(n: int, size: int, *, seed: int = 0, start: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB cartoon faces; image i depends only on (seed, start + i)."""
    _check_arguments(n, size, start)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for offset in range(n):
        images[offset] = _draw_face(_image_rng("faces", seed, start + offset), size)
    return images


def make_shapes(
    n: int, size: int, *, seed: int = 0, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, size, size, 3) uint8, labels (n,) int64 indexing SHAPE_CLASSES).

    Labels cycle through the classes by index, so every class is equally common.
    """
    _check_arguments(n, size, start)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.arange(start, start + n, dtype=np.int64) % len(SHAPE_CLASSES)
    for offset, label in enumerate(labels):
        rng = _image_rng("shapes", seed, start + offset)
        images[offset] = _draw_shape(rng, size, SHAPE_CLASSES[label])
    return images, labels


def _check_arguments(n: int, size: int, start: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")


def _image_rng(dataset: str, seed: int, index: int) -> random.Random:
    # random.seed hashes str seeds with SHA-512, unlike hash(), which is salted per process.
    return random.Random(f"gentool.synthetic:{dataset}:{seed}:{index}")


# ---------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------


class _Canvas:
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
class _Ellipse:
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


def _hsv(hue: float, saturation: float, value: float) -> Color:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(red * 255), round(green * 255), round(blue * 255))


def _shade(color: Color, factor: float) -> Color:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    red, green, blue = (min(255, round(channel * factor)) for channel in color)
    return (red, green, blue)


def _mix(first: Color, second: Color, weight: float) -> Color:
    red, green, blue = (round(a + (b - a) * weight) for a, b in zip(first, second, strict=True))
    return (red, green, blue)


def _jitter(rng: random.Random, color: Color, spread: int = 14) -> Color:
    """Nudge each channel so that palette entries do not repeat exactly across images."""
    red, green, blue = (min(255, max(0, c + rng.randint(-spread, spread))) for c in color)
    return (red, green, blue)


def _pick(rng: random.Random, weighted: Sequence[tuple[_Option, float]]) -> _Option:
    """One option, drawn in proportion to its weight."""
    options, weights = zip(*weighted, strict=True)
    return rng.choices(options, weights)[0]


def _background_corners(rng: random.Random, first: Color, second: Color) -> list[Color]:
    """Corner colours (top left, top right, bottom left, bottom right) for a solid or linear
    two-tone background."""
    middle = _mix(first, second, 0.5)
    return rng.choice(
        [
            [first, first, first, first],
            [first, first, second, second],
            [first, second, first, second],
            [first, middle, middle, second],
        ]
    )


# ---------------------------------------------------------------------------------------------
# Faces
# ---------------------------------------------------------------------------------------------

_SKIN_TONES: tuple[Color, ...] = (
    (255, 228, 208),
    (248, 212, 184),
    (238, 190, 152),
    (222, 168, 126),
    (198, 136, 96),
    (160, 104, 72),
    (122, 78, 54),
    (90, 58, 42),
)
_CARTOON_SKIN_TONES: tuple[Color, ...] = (
    (255, 214, 70),
    (170, 214, 140),
    (164, 198, 250),
    (238, 196, 236),
)
_CARTOON_SKIN_CHANCE = 0.12

# Natural colours are weighted up so that fantasy colours stay an accent, as in anime art.
_HAIR_COLORS: tuple[tuple[Color, float], ...] = (
    ((28, 24, 28), 3.0),  # black
    ((72, 46, 32), 3.0),  # dark brown
    ((128, 82, 48), 2.0),  # brown
    ((238, 204, 112), 2.0),  # blonde
    ((200, 92, 40), 1.5),  # ginger
    ((178, 32, 44), 1.0),  # red
    ((62, 104, 206), 1.0),  # blue
    ((244, 140, 188), 1.0),  # pink
    ((232, 232, 240), 1.0),  # white
    ((72, 164, 92), 0.7),  # green
    ((134, 84, 196), 0.7),  # purple
    ((150, 150, 160), 0.7),  # grey
)
_IRIS_COLORS: tuple[Color, ...] = (
    (100, 60, 30),
    (50, 110, 210),
    (60, 150, 80),
    (120, 120, 130),
    (210, 150, 40),
    (140, 70, 190),
    (200, 40, 50),
    (30, 150, 160),
)
_INK: Color = (40, 26, 30)
_SCLERA: Color = (252, 252, 250)
_PUPIL: Color = (18, 14, 20)
_HIGHLIGHT: Color = (255, 255, 255)
_MOUTH_INSIDE: Color = (130, 34, 46)
_TONGUE: Color = (232, 112, 120)
_BLUSH: RGBA = (255, 96, 120, 80)


@dataclass(frozen=True)
class _Face:
    """Anchor geometry that every part of one face is placed against, in unit coordinates."""

    head: _Ellipse
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


def _sample_face(rng: random.Random) -> _Face:
    rx = rng.uniform(0.23, 0.3)
    ry = rx * rng.uniform(1.05, 1.25)
    head = _Ellipse(0.5 + rng.uniform(-0.04, 0.04), 0.53 + rng.uniform(-0.03, 0.03), rx, ry)
    eye_rx = rx * rng.uniform(0.15, 0.24)
    return _Face(
        head=head,
        chin_taper=rng.uniform(0.0, 0.4),
        eye_y=head.cy + ry * rng.uniform(-0.02, 0.16),
        eye_dx=rx * rng.uniform(0.38, 0.5),
        eye_rx=eye_rx,
        eye_ry=eye_rx * rng.uniform(0.95, 1.45),
        mouth_y=head.cy + ry * rng.uniform(0.5, 0.64),
    )


def _draw_face(rng: random.Random, size: int) -> np.ndarray:
    backdrop = _hsv(rng.random(), rng.uniform(0.15, 0.7), rng.uniform(0.5, 1.0))
    backdrop_end = _shade(_hsv(rng.random(), rng.uniform(0.15, 0.7), 1.0), rng.uniform(0.4, 1.0))
    canvas = _Canvas(size, _background_corners(rng, backdrop, backdrop_end))
    face = _sample_face(rng)
    if rng.random() < _CARTOON_SKIN_CHANCE:
        skin = _jitter(rng, rng.choice(_CARTOON_SKIN_TONES))
    else:
        skin = _jitter(rng, rng.choice(_SKIN_TONES), spread=8)
    hair = _jitter(rng, _pick(rng, _HAIR_COLORS))
    hair_style = _pick(rng, _HAIR_STYLES)

    hair_style.back(canvas, rng, face, hair)
    _draw_body(canvas, rng, face, skin)
    _draw_head(canvas, rng, face, skin)
    if rng.random() < 0.4:
        _draw_blush(canvas, face)
    _draw_eyes(canvas, rng, face)
    _draw_brows(canvas, rng, face, _shade(hair, 0.6))
    _draw_nose(canvas, rng, face, _shade(skin, 0.72))
    _draw_mouth(canvas, rng, face)
    hair_style.front(canvas, rng, face, hair)
    return canvas.to_array()


def _draw_body(canvas: _Canvas, rng: random.Random, face: _Face, skin: Color) -> None:
    """Neck and, usually, the top of the shoulders in a clothing colour."""
    head = face.head
    neck_half = head.rx * rng.uniform(0.28, 0.4)
    neck_top = head.cy + 0.5 * head.ry
    # A darker neck reads as the shadow under the chin.
    canvas.polygon(
        [
            (head.cx - neck_half, neck_top),
            (head.cx + neck_half, neck_top),
            (head.cx + neck_half, 1.0),
            (head.cx - neck_half, 1.0),
        ],
        _shade(skin, 0.82),
    )
    if rng.random() < 0.8:
        clothes = _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))
        shoulders_top = head.cy + head.ry * rng.uniform(1.05, 1.25)
        canvas.ellipse(head.cx, shoulders_top + 0.3, head.rx * rng.uniform(1.5, 2.1), 0.3, clothes)


def _draw_head(canvas: _Canvas, rng: random.Random, face: _Face, skin: Color) -> None:
    head = face.head
    outline = _shade(skin, 0.55) if rng.random() < 0.6 else None
    for side in (-1, 1):
        canvas.ellipse(
            head.cx + side * head.rx * 0.96,
            face.eye_y + 0.05 * head.ry,
            head.rx * 0.13,
            head.ry * 0.17,
            skin,
            outline,
            width=0.008,
        )
    canvas.polygon(face.outline(), skin, outline, width=0.008)


def _draw_blush(canvas: _Canvas, face: _Face) -> None:
    for side in (-1, 1):
        canvas.ellipse(
            face.head.cx + side * (face.eye_dx + 0.3 * face.eye_rx),
            face.eye_y + face.eye_ry + 0.1 * face.head.ry,
            face.eye_rx * 0.85,
            face.eye_rx * 0.45,
            _BLUSH,
        )


def _draw_eyes(canvas: _Canvas, rng: random.Random, face: _Face) -> None:
    if rng.random() < 0.12:
        # Closed eyes: an upward arc reads as a happy squint, a downward one as sleep.
        degrees = rng.choice([(200.0, 340.0), (20.0, 160.0)])
        for side in (-1, 1):
            canvas.arc(
                face.head.cx + side * face.eye_dx,
                face.eye_y,
                face.eye_rx,
                face.eye_ry * 0.6,
                degrees,
                _INK,
                width=0.018,
            )
        return
    iris = _jitter(rng, rng.choice(_IRIS_COLORS))
    iris_rx = face.eye_rx * rng.uniform(0.55, 0.75)
    iris_ry = min(iris_rx * 1.2, face.eye_ry * 0.8)
    # A shared gaze offset makes both eyes look the same way.
    gaze_x = face.eye_rx * rng.uniform(-0.2, 0.2)
    gaze_y = face.eye_ry * rng.uniform(0.0, 0.15)
    has_lashes = rng.random() < 0.7
    for side in (-1, 1):
        x = face.head.cx + side * face.eye_dx
        canvas.ellipse(x, face.eye_y, face.eye_rx, face.eye_ry, _SCLERA, _INK, 0.006)
        iris_x, iris_y = x + gaze_x, face.eye_y + gaze_y
        canvas.ellipse(iris_x, iris_y, iris_rx, iris_ry, iris)
        canvas.ellipse(iris_x, iris_y, iris_rx * 0.5, iris_ry * 0.5, _PUPIL)
        canvas.ellipse(
            iris_x - 0.35 * iris_rx,
            iris_y - 0.4 * iris_ry,
            iris_rx * 0.3,
            iris_rx * 0.3,
            _HIGHLIGHT,
        )
        if has_lashes:
            canvas.arc(x, face.eye_y, face.eye_rx, face.eye_ry, (195.0, 345.0), _INK, 0.02)


def _draw_brows(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    half_length = face.eye_rx * rng.uniform(0.7, 1.0)
    # Inner ends lower look cross, higher look worried.
    tilt = face.eye_ry * rng.uniform(-0.35, 0.35)
    y = face.brow_y - face.eye_ry * rng.uniform(0.0, 0.3)
    width = rng.uniform(0.012, 0.024)
    for side in (-1, 1):
        x = face.head.cx + side * face.eye_dx
        canvas.line(
            [(x - side * half_length, y + tilt), (x + side * half_length, y - tilt)], color, width
        )


def _draw_nose(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    x = face.head.cx
    y = (face.eye_y + face.eye_ry + face.mouth_y) / 2
    length = face.head.ry * 0.07
    style = rng.choice(["dot", "line", "hook"])
    if style == "dot":
        canvas.ellipse(x, y, 0.012, 0.009, color)
    elif style == "line":
        canvas.line([(x, y - length), (x, y + length * 0.5)], color, 0.01)
    else:
        canvas.line(
            [
                (x + length * 0.3, y - length),
                (x - length * 0.4, y + length * 0.5),
                (x + length * 0.2, y + length * 0.6),
            ],
            color,
            0.009,
        )


def _draw_mouth(canvas: _Canvas, rng: random.Random, face: _Face) -> None:
    x, y = face.head.cx, face.mouth_y
    half_width = face.head.rx * rng.uniform(0.12, 0.3)
    style = rng.choice(["smile", "open", "flat", "o"])
    if style == "smile":
        depth = half_width * rng.uniform(0.3, 0.8)
        canvas.arc(x, y - depth, half_width, depth * 2, (25.0, 155.0), _INK, 0.014)
    elif style == "open":
        height = half_width * rng.uniform(0.6, 1.0)
        canvas.chord(x, y - height * 0.3, half_width, height, (0.0, 180.0), _MOUTH_INSIDE)
        canvas.chord(x, y + height * 0.25, half_width * 0.55, height * 0.4, (0.0, 180.0), _TONGUE)
    elif style == "flat":
        canvas.line([(x - half_width * 0.7, y), (x + half_width * 0.7, y)], _INK, 0.013)
    else:
        canvas.ellipse(x, y, half_width * 0.35, half_width * 0.45, _MOUTH_INSIDE, _INK, 0.006)


# Hair is drawn in two layers: the back layer goes behind the head, the front layer over the
# forehead after the features, so fringes can overlap the eyebrows.

_HairLayer = Callable[[_Canvas, random.Random, _Face, Color], None]


def _hair_shell(face: _Face, volume: float) -> _Ellipse:
    """The outer surface of the hair: the head grown by volume and lifted so the crown is fuller."""
    head = face.head
    return _Ellipse(
        head.cx, head.cy - 0.06 * head.ry, head.rx * (1 + volume), head.ry * (1 + 0.8 * volume)
    )


def _draw_cap(canvas: _Canvas, face: _Face, color: Color, volume: float, down_to: float) -> None:
    """Hair behind the head down to a relative depth (0 = head centre, 1 = chin)."""
    shell = _hair_shell(face, volume)
    canvas.polygon(shell.arc_above(face.head.cy + down_to * face.head.ry), color)


def _draw_fringe(
    canvas: _Canvas,
    face: _Face,
    color: Color,
    *,
    volume: float,
    hairline: float,
    strands: int,
    depth: float,
    sweep: float = 0.0,
) -> None:
    """Hair over the forehead: the shell above the hairline with a jagged lower edge.

    Strand tips hang depth below the hairline; sweep lengthens them towards one side.
    """
    shell = _hair_shell(face, volume)
    top = shell.arc_above(hairline)
    left_x, right_x = top[0][0], top[-1][0]
    edge = []
    for step in range(2 * strands, -1, -1):
        along = step / (2 * strands)
        tip_depth = depth * (1 + sweep * (along - 0.5)) if step % 2 else 0.0
        edge.append((left_x + (right_x - left_x) * along, hairline + tip_depth))
    canvas.polygon(top + edge, color)
    # A pale band across the crown is the usual cartoon cue for glossy hair.
    canvas.arc(
        shell.cx,
        shell.cy,
        shell.rx * 0.75,
        shell.ry * 0.75,
        (215.0, 275.0),
        _mix(color, _HIGHLIGHT, 0.35),
        width=0.02,
    )


def _draw_side_locks(
    canvas: _Canvas, face: _Face, color: Color, *, volume: float, hairline: float, length: float
) -> None:
    """Two tapering locks that frame the face, from the hairline down to a relative length."""
    head = face.head
    shell = _hair_shell(face, volume)
    tip_y = head.cy + length * head.ry
    # Starting on the shell's outline keeps the locks from poking out of the back hair.
    top_half_width = shell.half_width_at(hairline)
    for side in (-1, 1):
        canvas.polygon(
            [
                (shell.cx + side * top_half_width, hairline),
                (head.cx + side * head.rx * 0.55, hairline),
                (head.cx + side * head.rx * 0.85, tip_y),
                (shell.cx + side * shell.rx, tip_y),
            ],
            color,
        )


def _random_fringe(
    canvas: _Canvas, rng: random.Random, face: _Face, color: Color, volume: float
) -> float:
    """A fringe whose tips stop around the eyebrows, from a straight cut to swept bangs.

    Returns its hairline so that other front hair can line up with it.
    """
    head = face.head
    hairline = head.cy - head.ry * rng.uniform(0.55, 0.75)
    reach = max(0.0, face.brow_y - hairline)
    _draw_fringe(
        canvas,
        face,
        color,
        volume=volume,
        hairline=hairline,
        strands=rng.randint(3, 7),
        depth=reach * rng.uniform(0.4, 1.0),
        sweep=rng.uniform(-1.0, 1.0),
    )
    return hairline


def _short_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    _draw_cap(canvas, face, color, volume=0.1, down_to=rng.uniform(0.0, 0.3))


def _short_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    head = face.head
    _draw_fringe(
        canvas,
        face,
        color,
        volume=0.1,
        hairline=head.cy - head.ry * rng.uniform(0.5, 0.7),
        strands=rng.randint(1, 3),
        depth=head.ry * rng.uniform(0.0, 0.12),
        sweep=rng.uniform(-1.0, 1.0),
    )


def _long_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    """Hair that falls past the face at both sides and ends in a row of locks."""
    shell = _hair_shell(face, 0.16)
    bottom = face.head.cy + face.head.ry * rng.uniform(0.7, 1.8)
    flare = shell.rx * rng.uniform(1.0, 1.25)
    locks = rng.randint(2, 5)
    lock_depth = face.head.ry * rng.uniform(0.0, 0.25)
    ends = []
    for step in range(2 * locks + 1):
        along = step / (2 * locks)
        ends.append(
            (shell.cx + flare * (1 - 2 * along), bottom - (lock_depth if step % 2 else 0.0))
        )
    canvas.polygon(shell.arc_above(shell.cy) + ends, color)


def _long_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    hairline = _random_fringe(canvas, rng, face, color, volume=0.16)
    _draw_side_locks(
        canvas, face, color, volume=0.16, hairline=hairline, length=rng.uniform(0.2, 0.8)
    )


def _bob_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    _draw_cap(canvas, face, color, volume=0.18, down_to=rng.uniform(0.5, 0.8))


def _bob_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    _random_fringe(canvas, rng, face, color, volume=0.18)


def _spiky_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    """A crown of spikes radiating from the upper half of the head."""
    shell = _hair_shell(face, 0.08)
    spikes = rng.randint(5, 9)
    length = rng.uniform(0.25, 0.5)
    first, last = math.pi - 0.35, 2 * math.pi + 0.35
    points = [shell.point(first)]
    for spike in range(spikes):
        angle = first + (last - first) * (spike + 0.5) / spikes
        points.append(shell.point(angle, stretch=1 + length))
        points.append(shell.point(first + (last - first) * (spike + 1) / spikes))
    points.append((shell.cx, shell.cy + 0.3 * shell.ry))
    canvas.polygon(points, color)


def _spiky_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    head = face.head
    hairline = head.cy - head.ry * rng.uniform(0.5, 0.7)
    _draw_fringe(
        canvas,
        face,
        color,
        volume=0.08,
        hairline=hairline,
        strands=rng.randint(3, 5),
        depth=max(0.0, face.brow_y - hairline) * rng.uniform(0.6, 1.0),
    )


def _bald_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    """Only tufts above the ears, sometimes not even those."""
    if rng.random() < 0.3:
        return
    head = face.head
    for side in (-1, 1):
        canvas.ellipse(
            head.cx + side * head.rx * 0.95,
            head.cy - 0.2 * head.ry,
            head.rx * 0.16,
            head.ry * 0.3,
            color,
        )


def _bald_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    """At most a single curl on top of the head."""
    if rng.random() < 0.5:
        head = face.head
        top = head.cy - head.ry
        canvas.arc(head.cx + 0.03, top - 0.01, 0.04, 0.04, (90.0, 360.0), color, 0.012)


def _buns_back(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    head = face.head
    radius = head.rx * rng.uniform(0.3, 0.42)
    for side in (-1, 1):
        canvas.ellipse(
            head.cx + side * head.rx * 0.78, head.cy - head.ry * 0.92, radius, radius, color
        )
    _draw_cap(canvas, face, color, volume=0.1, down_to=0.1)


def _buns_front(canvas: _Canvas, rng: random.Random, face: _Face, color: Color) -> None:
    _random_fringe(canvas, rng, face, color, volume=0.1)


class _HairStyle(NamedTuple):
    back: _HairLayer
    front: _HairLayer


_HAIR_STYLES: tuple[tuple[_HairStyle, float], ...] = (
    (_HairStyle(_short_back, _short_front), 3.0),
    (_HairStyle(_long_back, _long_front), 3.0),
    (_HairStyle(_bob_back, _bob_front), 2.5),
    (_HairStyle(_spiky_back, _spiky_front), 1.0),
    (_HairStyle(_buns_back, _buns_front), 1.0),
    (_HairStyle(_bald_back, _bald_front), 0.5),
)


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

_STAR_INNER_RADIUS = 0.42
_CROSS_ARM_HALF_WIDTH = 0.3
_RING_THICKNESS = 0.34


def _draw_shape(rng: random.Random, size: int, shape: str) -> np.ndarray:
    color = _hsv(rng.random(), rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))
    canvas = _Canvas(size, [_contrasting_background(rng, color)] * 4)
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
        return _hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3))
    return _hsv(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.88, 1.0))


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
