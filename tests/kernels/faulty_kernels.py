"""A kernel that breaks a rule Triton's interpreter does not check, for test_compiled.py."""

from __future__ import annotations

import triton
import triton.language as tl

SCALE = 2  # a plain int: a GPU compiler refuses to read it inside a kernel


@triton.jit
def _reads_a_module_level_int(x_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets) * SCALE)
