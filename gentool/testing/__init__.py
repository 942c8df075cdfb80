"""The conformance kit: the contract every model plugin keeps, as named checks.

A plugin author runs it in their own tests::

    from gentool.testing import parametrize_with_checks
    from gentool_mymodel import plugin

    @parametrize_with_checks([plugin])
    def test_plugin(plugin, check):
        check(plugin)

Each check is a pytest case named ``<plugin>-<check>``, so ``-k`` selects one. Checks adapt to the
plugin's capability flags; those that do not apply are left out. Outside pytest, `check_plugin`
runs them all and raises (or warns) on a failure; `gentool plugin check NAME` shows them as a table.

Models are built on the CPU with the plugin's `test_config` (a tiny configuration) for 3-channel
data, labelled with three classes when the plugin is conditional, filled with random values in the
plugin's value range.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from gentool.api import ModelPlugin
from gentool.testing.checks import CHECKS
from gentool.testing.rules import Check, CheckFailed, CheckResult

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailed",
    "CheckResult",
    "check_plugin",
    "checks_for",
    "parametrize_with_checks",
]


def checks_for(plugin: ModelPlugin) -> list[Check]:
    """The checks that apply to `plugin`, in order."""
    return [check for check in CHECKS if check.applies(plugin)]


def check_plugin(
    plugin: ModelPlugin, on_fail: Literal["raise", "warn"] = "raise"
) -> list[CheckResult]:
    """Run every applicable check: raise CheckFailed at the first failure, or warn and go on."""
    results = []
    for check in checks_for(plugin):
        try:
            check(plugin)
        except Exception as error:  # a crash inside the plugin fails the check as well
            message = (
                error.args[0] if isinstance(error, CheckFailed) and error.args else repr(error)
            )
            if on_fail == "raise":
                raise CheckFailed(f"{plugin.name}: {check.name}: {message}") from error
            warnings.warn(f"{plugin.name}: {check.name}: {message}", stacklevel=2)
            results.append(CheckResult(check.name, check.description, False, message))
        else:
            results.append(CheckResult(check.name, check.description, True))
    return results


def parametrize_with_checks(
    plugins: Iterable[ModelPlugin], *, expected_failed_checks: Mapping[str, str] | None = None
) -> Any:
    """A pytest decorator giving each (plugin, check) pair its own test case.

    `expected_failed_checks` maps check names to why they are known to fail; those cases are strict
    xfails, so the test suite says when one starts to pass.
    """
    import pytest

    expected = dict(expected_failed_checks or {})
    unknown = set(expected) - {check.name for check in CHECKS}
    if unknown:
        raise ValueError(f"unknown check names in expected_failed_checks: {sorted(unknown)}")
    cases = []
    for plugin in plugins:
        for check in checks_for(plugin):
            marks = []
            if check.name in expected:
                marks.append(pytest.mark.xfail(reason=expected[check.name], strict=True))
            cases.append(pytest.param(plugin, check, id=f"{plugin.name}-{check.name}", marks=marks))
    return pytest.mark.parametrize(("plugin", "check"), cases)
