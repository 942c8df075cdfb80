"""The built-in cartoon faces: a head, eyes, brows, nose, mouth, hair and a body, each part
drawn from its own choices."""

from __future__ import annotations

import random

import numpy as np

from gentool.synthetic.anatomy import (
    Face,
    sample_face,
)
from gentool.synthetic.canvas import (
    HIGHLIGHT,
    RGBA,
    Canvas,
    Color,
    background_corners,
    hsv,
    jitter,
    pick,
    shade,
)
from gentool.synthetic.hair import HAIR_STYLES

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
_MOUTH_INSIDE: Color = (130, 34, 46)
_TONGUE: Color = (232, 112, 120)
_BLUSH: RGBA = (255, 96, 120, 80)


def draw_face(rng: random.Random, size: int) -> np.ndarray:
    backdrop = hsv(rng.random(), rng.uniform(0.15, 0.7), rng.uniform(0.5, 1.0))
    backdrop_end = shade(hsv(rng.random(), rng.uniform(0.15, 0.7), 1.0), rng.uniform(0.4, 1.0))
    canvas = Canvas(size, background_corners(rng, backdrop, backdrop_end))
    face = sample_face(rng)
    if rng.random() < _CARTOON_SKIN_CHANCE:
        skin = jitter(rng, rng.choice(_CARTOON_SKIN_TONES))
    else:
        skin = jitter(rng, rng.choice(_SKIN_TONES), spread=8)
    hair = jitter(rng, pick(rng, _HAIR_COLORS))
    hair_style = pick(rng, HAIR_STYLES)

    hair_style.back(canvas, rng, face, hair)
    _draw_body(canvas, rng, face, skin)
    _draw_head(canvas, rng, face, skin)
    if rng.random() < 0.4:
        _draw_blush(canvas, face)
    _draw_eyes(canvas, rng, face)
    _draw_brows(canvas, rng, face, shade(hair, 0.6))
    _draw_nose(canvas, rng, face, shade(skin, 0.72))
    _draw_mouth(canvas, rng, face)
    hair_style.front(canvas, rng, face, hair)
    return canvas.to_array()


def _draw_body(canvas: Canvas, rng: random.Random, face: Face, skin: Color) -> None:
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
        shade(skin, 0.82),
    )
    if rng.random() < 0.8:
        clothes = hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))
        shoulders_top = head.cy + head.ry * rng.uniform(1.05, 1.25)
        canvas.ellipse(head.cx, shoulders_top + 0.3, head.rx * rng.uniform(1.5, 2.1), 0.3, clothes)


def _draw_head(canvas: Canvas, rng: random.Random, face: Face, skin: Color) -> None:
    head = face.head
    outline = shade(skin, 0.55) if rng.random() < 0.6 else None
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


def _draw_blush(canvas: Canvas, face: Face) -> None:
    for side in (-1, 1):
        canvas.ellipse(
            face.head.cx + side * (face.eye_dx + 0.3 * face.eye_rx),
            face.eye_y + face.eye_ry + 0.1 * face.head.ry,
            face.eye_rx * 0.85,
            face.eye_rx * 0.45,
            _BLUSH,
        )


def _draw_eyes(canvas: Canvas, rng: random.Random, face: Face) -> None:
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
    iris = jitter(rng, rng.choice(_IRIS_COLORS))
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
            HIGHLIGHT,
        )
        if has_lashes:
            canvas.arc(x, face.eye_y, face.eye_rx, face.eye_ry, (195.0, 345.0), _INK, 0.02)


def _draw_brows(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _draw_nose(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _draw_mouth(canvas: Canvas, rng: random.Random, face: Face) -> None:
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
