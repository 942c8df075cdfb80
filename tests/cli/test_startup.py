"""The commands that only read plugin metadata must not pay for importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from gentool.__main__ import main
sys.argv = ["gentool", *{args!r}]
try:
    main()
except SystemExit as exit:
    code = exit.code or 0
else:
    code = 0
heavy = sorted(
    name for name in ("torch", "triton", "numpy", "PIL", "matplotlib") if name in sys.modules
)
print("HEAVY:" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["list", "--json"],
        ["info", "dcgan"],
        ["train", "--help"],
        ["export", "--help"],
    ],
)
def test_metadata_commands_do_not_import_torch(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("HEAVY:"), result.stdout[-300:]


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "gentool", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("gentool ")
