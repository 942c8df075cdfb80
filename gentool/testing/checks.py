"""The checks: one function per rule of the plugin API, and the table that names them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gentool.api import ModelPlugin
from gentool.config import config_to_dict, config_to_toml, toml_loads
from gentool.errors import ConfigError
from gentool.testing.code_checks import (
    conditional,
    decode_gives_images,
    encode_gives_one_code_per_image,
    evaluation_metrics_are_numbers,
    has_method,
    output_depends_on_label,
    reconstruct_shape_dtype_range,
    sample_latent_gives_codes,
)
from gentool.testing.exercise import (
    build,
    check_images,
    parameter_owners,
    random_batch,
    reconstruct,
    sample,
    train_once,
)
from gentool.testing.rules import Check, CheckFailed


def _import_leaves_torch_unloaded(plugin: ModelPlugin) -> None:
    module = _plugin_module(plugin)
    probe = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(name for name in ('torch', 'triton') if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckFailed(
            f"importing {module} fails: {last_line}; `python -c 'import {module}'` shows the "
            "traceback to fix"
        )
    loaded = result.stdout.strip().splitlines()[-1]
    if loaded != "[]":
        raise CheckFailed(
            f"importing {module} loads {loaded}: import torch inside build(), not at the top of "
            "the plugin's module, so that `gentool --help` and `gentool list` stay fast"
        )


def _plugin_module(plugin: ModelPlugin) -> str:
    """The module gentool imports to find `plugin`: its entry point's, else its config's."""
    from gentool.registry import discover

    for entry in discover():
        if _same_plugin(entry.plugin, plugin):
            return entry.target.partition(":")[0]
    return plugin.Config.__module__


def _entry_point_resolves(plugin: ModelPlugin) -> None:
    from gentool.registry import discover

    entries = [entry for entry in discover() if entry.name == plugin.name]
    if not entries:
        raise CheckFailed(
            f"no entry point named {plugin.name!r} in the gentool.models group: declare "
            f'{plugin.name} = "your_module:plugin" under [project.entry-points."gentool.models"] '
            "and install the package"
        )
    broken = [entry for entry in entries if not entry.ok]
    if broken:
        raise CheckFailed(
            f"the entry point {broken[0].qualified_name} fails: {broken[0].error}; "
            "GENTOOL_STRICT_PLUGINS=1 gentool list shows the traceback to fix"
        )
    if not any(_same_plugin(entry.plugin, plugin) for entry in entries):
        raise CheckFailed(
            f"the entry point {plugin.name!r} resolves to another plugin: point it at this "
            "plugin object"
        )


def _same_plugin(installed: ModelPlugin | None, checked: ModelPlugin) -> bool:
    """Whether `checked` is the installed plugin, or a variant of it that only tests another
    config (`dataclasses.replace(plugin, test_config=...)`, as the kit checks test_configs),
    with that config's capabilities."""
    if installed is None:
        return False
    tested = {"test_config": checked.test_config, "test_configs": checked.test_configs}
    return replace(installed, **tested, capabilities=checked.capabilities) == checked


def _config_defaults_validate(plugin: ModelPlugin) -> None:
    plugin.parse_config({})
    plugin.parse_config(plugin.test_config)
    undescribed = [field.name for field in plugin.config_fields() if not field.help.strip()]
    if undescribed:
        raise CheckFailed(
            f"config fields without a description: {', '.join(undescribed)}; declare each "
            'with option(default, "what it sets", ...) from gentool.api'
        )


def _config_rejects_unknown_keys(plugin: ModelPlugin) -> None:
    try:
        plugin.parse_config({"surely_not_an_option": 1})
    except ConfigError:
        return
    raise CheckFailed(
        "an unknown config key was accepted: let ModelPlugin.parse_config read the config, "
        "declared as a frozen dataclass of option() fields"
    )


def _config_round_trips(plugin: ModelPlugin) -> None:
    config = plugin.parse_config(plugin.test_config)
    from_json = plugin.parse_config(json.loads(json.dumps(config_to_dict(config))))
    if from_json != config:
        raise CheckFailed(
            f"the config changes through JSON: {config} became {from_json}; give fields the "
            "types options support (bool, int, float, str, Literal, tuple[int, ...], X | None)"
        )
    from_toml = plugin.parse_config(toml_loads(config_to_toml(config)))
    if from_toml != config:
        raise CheckFailed(
            f"the config changes through TOML: {config} became {from_toml}; give fields the "
            "types options support (bool, int, float, str, Literal, tuple[int, ...], X | None)"
        )


def _builds_on_cpu(plugin: ModelPlugin) -> None:
    import torch

    model, _ = build(plugin)
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(
            f"build returned {type(model).__name__}, not a torch.nn.Module: return the module"
        )
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise CheckFailed(
            "the model has no trainable parameters: assign its networks as attributes of the "
            "module (self.encoder = ...) so that their parameters are registered"
        )
    for method in ("configure_optimizers", "training_step"):
        if not callable(getattr(model, method, None)):
            raise CheckFailed(
                f"the model has no {method}() method: define it (see gentool.api.GenerativeModel)"
            )


def _number_bounds_configure_optimizers(plugin: ModelPlugin) -> None:
    """A float option's bounds are values a user may pass: the optimizers must take them (an
    Adam beta of 1, allowed by max=1, fails in torch.optim.Adam, not in the config)."""
    from gentool.errors import GentoolError
    from gentool.training.step import optimizers_of

    for field in plugin.config_fields():
        bounds = [bound for bound in (field.min, field.max) if bound is not None]
        for bound in bounds if field.type is float else []:
            try:
                model, _ = build(plugin, changes={field.name: float(bound)})
            except (ConfigError, ValueError):  # a combination the config or build refuses
                continue
            try:
                optimizers_of(model, plugin)
            except (GentoolError, ValueError, RuntimeError) as error:
                raise CheckFailed(
                    f"{field.name}={bound} passes the config's bounds but configure_optimizers "
                    f"fails on it ({error}): narrow the option's min or max"
                ) from None


def _training_step_updates_parameters(plugin: ModelPlugin) -> None:
    import torch

    from gentool.training.step import StepContext, optimizers_of, phases_of, train_step

    model, spec = build(plugin)
    optimizers = optimizers_of(model, plugin)
    owners = parameter_owners(model, optimizers, phased=bool(phases_of(model, plugin)))
    before = {name: value.detach().clone() for name, value in model.named_parameters()}

    class AuditingContext(StepContext):
        """Checks that parameters move only inside ctx.step, each by the optimizer that owns it."""

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.settled = before

        def step(self, name: str) -> None:
            self._refuse_moves("outside ctx.step")
            super().step(name)
            self._refuse_moves(f"by optimizer {name!r}, which does not own them", owner=name)

        def _refuse_moves(self, how: str, owner: str | None = None) -> None:
            now = {key: value.detach().clone() for key, value in model.named_parameters()}
            moved = [key for key in now if not torch.equal(now[key], self.settled[key])]
            wrong = [key for key in moved if owner is None or owner not in owners.get(key, ())]
            if wrong:
                shown = f"parameters changed {how}: {', '.join(wrong[:5])}"
                raise CheckFailed(f"{shown}; {_fix_for_moves(model, wrong, owner)}")
            self.settled = now

    context = AuditingContext(optimizers, torch.device("cpu"))
    # A model trained in phases moves some parameters in each: one step per phase, then.
    for phase in phases_of(model, plugin) or [None]:
        context.enter_phase(phase)
        logs = train_step(model, random_batch(plugin, spec), context, plugin)
        context._refuse_moves("after the last ctx.step")
        bad = {name: v.tolist() for name, v in logs.items() if not torch.isfinite(v).all()}
        if bad:
            where = f" in phase {phase.name!r}" if phase else ""
            raise CheckFailed(
                f"one training step{where} logged non-finite values: {bad}; check the loss on "
                "images in the plugin's value_range (a log of 0, a division by a zero norm)"
            )
    unchanged = [
        name
        for name, value in model.named_parameters()
        if value.requires_grad and torch.equal(value, before[name])
    ]
    if unchanged:
        raise CheckFailed(
            f"{len(unchanged)} trainable parameters did not change in one training step (one "
            f"per phase, for phased models; first: {', '.join(unchanged[:3])}): put every "
            "trainable parameter in an optimizer and in the loss, or freeze it "
            "(requires_grad=False)"
        )


def _fix_for_moves(model: Any, moved: list[str], owner: str | None) -> str:
    """What to do about parameters that moved where they should not, for the case found."""
    parameters = dict(model.named_parameters())
    if all(not parameters[name].requires_grad for name in moved if name in parameters):
        return (
            "values a training step updates by hand (an EMA codebook, running statistics) "
            "belong in registered buffers (self.register_buffer), not in frozen parameters"
        )
    if owner is not None:
        return f"give each parameter to the one optimizer that steps it (not {owner!r})"
    return "step optimizers only through ctx.step(name), after ctx.backward(loss)"


def _trains_on_labelled_data(plugin: ModelPlugin) -> None:
    """A model that is not conditional may still be trained on labelled data, whose batches
    carry labels: one step of it, as gentool takes it."""
    import torch

    model, spec = build(plugin, labelled=True)
    logs = train_once(plugin, model, spec)
    bad = {name: v.tolist() for name, v in logs.items() if not torch.isfinite(v).all()}
    if bad:
        raise CheckFailed(
            f"one training step on labelled data logged non-finite values: {bad}; check the "
            "loss with batch.labels given, as gentool gives them whenever the data has labels"
        )


def _sample_shape_dtype_range(plugin: ModelPlugin) -> None:
    model, spec = build(plugin)
    model.eval()
    images = sample(plugin, model, spec, seed=0)
    check_images("sample", images, (5, spec.channels, spec.height, spec.width), plugin)


def _same_seed_same_output(plugin: ModelPlugin) -> None:
    import torch

    model, spec = build(plugin)
    model.eval()
    first, again = sample(plugin, model, spec, seed=1), sample(plugin, model, spec, seed=1)
    if not torch.equal(first, again):
        raise CheckFailed(
            "two samples with generators of the same seed differ: draw noise from "
            "the `generator` argument"
        )
    if torch.equal(first, sample(plugin, model, spec, seed=2)):
        raise CheckFailed(
            "samples with different seeds are identical: draw the noise from the `generator` "
            "argument (torch.randn(..., generator=generator))"
        )


def _save_load_gives_identical_outputs(plugin: ModelPlugin) -> None:
    import torch
    from safetensors.torch import load, save

    model, spec = build(plugin)
    train_once(plugin, model, spec)  # so that buffers such as running statistics have moved
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    restored, _ = build(plugin, seed=123)
    restored.load_state_dict(load(save(state)), strict=True)
    if plugin.capabilities.sample:
        same = torch.equal(
            sample(plugin, model, spec, seed=3), sample(plugin, restored, spec, seed=3)
        )
    else:
        images = random_batch(plugin, spec).images
        same = torch.equal(
            reconstruct(plugin, model, images, spec), reconstruct(plugin, restored, images, spec)
        )
    if not same:
        raise CheckFailed(
            "a model loaded from its safetensors state_dict gives other outputs: keep all state "
            "in parameters and registered buffers"
        )


def _has(capability: str) -> Callable[[ModelPlugin], bool]:
    return lambda plugin: getattr(plugin.capabilities, capability)


def _always(plugin: ModelPlugin) -> bool:
    return True


CHECKS: list[Check] = [
    Check(
        "import_leaves_torch_unloaded",
        _import_leaves_torch_unloaded,
        _always,
        "importing the plugin's module does not import torch",
        per_config=False,
    ),
    Check(
        "entry_point_resolves",
        _entry_point_resolves,
        _always,
        "an installed gentool.models entry point of this name loads this plugin",
        per_config=False,
    ),
    Check(
        "config_defaults_validate",
        _config_defaults_validate,
        _always,
        "defaults and test_config validate; every field is described",
    ),
    Check(
        "config_rejects_unknown_keys",
        _config_rejects_unknown_keys,
        _always,
        "an unknown config key is a ConfigError",
        per_config=False,
    ),
    Check(
        "config_round_trips",
        _config_round_trips,
        _always,
        "the config survives JSON and TOML unchanged",
    ),
    Check(
        "builds_on_cpu",
        _builds_on_cpu,
        _always,
        "build gives an nn.Module with trainable parameters on the CPU",
    ),
    Check(
        "number_bounds_configure_optimizers",
        _number_bounds_configure_optimizers,
        _always,
        "each float option's min and max build a model whose optimizers accept them",
    ),
    Check(
        "training_step_updates_parameters",
        _training_step_updates_parameters,
        _always,
        "one step: finite logs, every parameter moves, each optimizer only its own",
    ),
    Check(
        "trains_on_labelled_data",
        _trains_on_labelled_data,
        lambda plugin: not plugin.capabilities.conditional,
        "one step on labelled data, as gentool trains any model on it, logs finite values",
    ),
    Check(
        "sample_shape_dtype_range",
        _sample_shape_dtype_range,
        _has("sample"),
        "sample gives (n, C, H, W) floats in the value range",
    ),
    Check(
        "reconstruct_shape_dtype_range",
        reconstruct_shape_dtype_range,
        _has("reconstruct"),
        "reconstruct gives images of the input's shape in the value range",
    ),
    Check(
        "encode_gives_one_code_per_image",
        encode_gives_one_code_per_image,
        _has("encode"),
        "encode gives finite (B, ...) float32 codes, or int64 ones for discrete codes",
    ),
    Check(
        "sample_latent_gives_codes",
        sample_latent_gives_codes,
        has_method("sample_latent"),
        "sample_latent gives (n, ...) codes, the same for the same generator seed",
    ),
    Check(
        "decode_gives_images",
        decode_gives_images,
        has_method("decode"),
        "decode of codes from sample_latent, encode and walks gives images in the value range",
    ),
    Check(
        "evaluation_metrics_are_numbers",
        evaluation_metrics_are_numbers,
        has_method("evaluation_metrics"),
        "the model's own evaluation metrics are finite numbers with names of their own",
    ),
    Check(
        "output_depends_on_label",
        output_depends_on_label,
        conditional,
        "a conditional model's images change with the class it is given",
    ),
    Check(
        "same_seed_same_output",
        _same_seed_same_output,
        _has("sample"),
        "the same generator seed gives the same samples, another seed others",
    ),
    Check(
        "save_load_gives_identical_outputs",
        _save_load_gives_identical_outputs,
        _always,
        "a safetensors round trip of the state_dict gives identical outputs",
    ),
]
