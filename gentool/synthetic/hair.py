"""Hair for the built-in faces: a back layer drawn behind the head and a front layer over it,
in one of a few styles."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import NamedTuple

from gentool.synthetic.anatomy import Face
from gentool.synthetic.canvas import HIGHLIGHT, Canvas, Color, Ellipse, mix

_HairLayer = Callable[[Canvas, random.Random, Face, Color], None]


def _hair_shell(face: Face, volume: float) -> Ellipse:
    """The outer surface of the hair: the head grown by volume and lifted so the crown is fuller."""
    head = face.head
    return Ellipse(
        head.cx, head.cy - 0.06 * head.ry, head.rx * (1 + volume), head.ry * (1 + 0.8 * volume)
    )


def _draw_cap(canvas: Canvas, face: Face, color: Color, volume: float, down_to: float) -> None:
    """Hair behind the head down to a relative depth (0 = head centre, 1 = chin)."""
    shell = _hair_shell(face, volume)
    canvas.polygon(shell.arc_above(face.head.cy + down_to * face.head.ry), color)


def _draw_fringe(
    canvas: Canvas,
    face: Face,
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
        mix(color, HIGHLIGHT, 0.35),
        width=0.02,
    )


def _draw_side_locks(
    canvas: Canvas, face: Face, color: Color, *, volume: float, hairline: float, length: float
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
    canvas: Canvas, rng: random.Random, face: Face, color: Color, volume: float
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


def _short_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    _draw_cap(canvas, face, color, volume=0.1, down_to=rng.uniform(0.0, 0.3))


def _short_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _long_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _long_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    hairline = _random_fringe(canvas, rng, face, color, volume=0.16)
    _draw_side_locks(
        canvas, face, color, volume=0.16, hairline=hairline, length=rng.uniform(0.2, 0.8)
    )


def _bob_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    _draw_cap(canvas, face, color, volume=0.18, down_to=rng.uniform(0.5, 0.8))


def _bob_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    _random_fringe(canvas, rng, face, color, volume=0.18)


def _spiky_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _spiky_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _bald_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
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


def _bald_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    """At most a single curl on top of the head."""
    if rng.random() < 0.5:
        head = face.head
        top = head.cy - head.ry
        canvas.arc(head.cx + 0.03, top - 0.01, 0.04, 0.04, (90.0, 360.0), color, 0.012)


def _buns_back(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    head = face.head
    radius = head.rx * rng.uniform(0.3, 0.42)
    for side in (-1, 1):
        canvas.ellipse(
            head.cx + side * head.rx * 0.78, head.cy - head.ry * 0.92, radius, radius, color
        )
    _draw_cap(canvas, face, color, volume=0.1, down_to=0.1)


def _buns_front(canvas: Canvas, rng: random.Random, face: Face, color: Color) -> None:
    _random_fringe(canvas, rng, face, color, volume=0.1)


class _HairStyle(NamedTuple):
    back: _HairLayer
    front: _HairLayer


HAIR_STYLES: tuple[tuple[_HairStyle, float], ...] = (
    (_HairStyle(_short_back, _short_front), 3.0),
    (_HairStyle(_long_back, _long_front), 3.0),
    (_HairStyle(_bob_back, _bob_front), 2.5),
    (_HairStyle(_spiky_back, _spiky_front), 1.0),
    (_HairStyle(_buns_back, _buns_front), 1.0),
    (_HairStyle(_bald_back, _bald_front), 0.5),
)
