"""Checks of the whole numbers a Python caller passes (counts, seeds): gentool's one-line
errors, not NumPy's or torch's."""

from __future__ import annotations

import operator

import numpy as np

from gentool.errors import GentoolError


def whole_number(value: object) -> int | None:
    """`value` as an int when it is a whole number (Python, NumPy or a 0-d integer tensor), not
    a bool."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def count_argument(value: int, name: str, *, least: int = 1) -> int:
    number = whole_number(value)
    if number is None or number < least:
        raise GentoolError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return number


def seed_argument(value: int) -> int:
    number = whole_number(value)
    if number is None or not 0 <= number < 2**63:
        raise GentoolError(f"seed must be a whole number from 0 to 2**63 - 1, got {value!r}")
    return number
