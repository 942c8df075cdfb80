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
plugin's value range. Each of `test_configs` is checked as well, as a variant of the plugin
(`dataclasses.replace(plugin, test_config=...)`), its cases named ``<plugin>-config<N>-<check>``;
the checks that do not depend on the config run once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal

from gentool.api import ModelPlugin
from gentool.testing.checks import CHECKS
from gentool.testing.exercise import for_test_config
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


def variants(plugin: ModelPlugin) -> Iterator[tuple[str, ModelPlugin, list[Check]]]:
    """(name, plugin, checks) for its test_config, then for each of its test_configs (without
    the checks that do not depend on the config); each plugin with the capabilities of its
    config."""
    yield plugin.name, for_test_config(plugin), checks_for(plugin)
    for number, config in enumerate(plugin.test_configs, start=1):
        variant = for_test_config(replace(plugin, test_config=config))
        checks = [check for check in checks_for(variant) if check.per_config]
        yield f"{plugin.name}-config{number}", variant, checks


def checks_for(plugin: ModelPlugin) -> list[Check]:
    """The checks that apply to `plugin` with its test_config, in order."""
    specialised = for_test_config(plugin)
    return [check for check in CHECKS if check.applies(specialised)]


def check_plugin(
    plugin: ModelPlugin, on_fail: Literal["raise", "warn"] = "raise"
) -> list[CheckResult]:
    """Run every applicable check: raise CheckFailed at the first failure, or warn and go on."""
    results = []
    for name, variant, checks in variants(plugin):
        for check in checks:
            shown = check.name if name == plugin.name else f"{name}: {check.name}"
            try:
                check(variant)
            except Exception as error:  # a crash inside the plugin fails the check as well
                message = (
                    error.args[0] if isinstance(error, CheckFailed) and error.args else repr(error)
                )
                if on_fail == "raise":
                    raise CheckFailed(f"{name}: {check.name}: {message}") from error
                warnings.warn(f"{name}: {check.name}: {message}", stacklevel=2)
                results.append(CheckResult(shown, check.description, False, message))
            else:
                results.append(CheckResult(shown, check.description, True))
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
        for name, variant, checks in variants(plugin):
            for check in checks:
                marks = []
                if check.name in expected:
                    marks.append(pytest.mark.xfail(reason=expected[check.name], strict=True))
                case = pytest.param(variant, check, id=f"{name}-{check.name}", marks=marks)
                cases.append(case)
    return pytest.mark.parametrize(("plugin", "check"), cases)
