"""The kit's vocabulary: a rule of the plugin API as a runnable check, and its outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gentool.api import ModelPlugin


class CheckFailed(AssertionError):
    """A plugin broke a rule of the plugin API; the message says which rule and what to do."""


@dataclass(frozen=True)
class Check:
    """One rule of the plugin API, runnable on a plugin."""

    name: str
    run: Callable[[ModelPlugin], None]
    applies: Callable[[ModelPlugin], bool]
    description: str
    per_config: bool = True  # run for each of test_config and test_configs, not just the first

    def __call__(self, plugin: ModelPlugin) -> None:
        self.run(plugin)

    def __repr__(self) -> str:
        return f"Check({self.name})"


@dataclass(frozen=True)
class CheckResult:
    check: str
    description: str
    passed: bool
    message: str = ""
