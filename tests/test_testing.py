"""The conformance kit: built-in plugins pass it, and each check catches the fault it names."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from gentool.api import ModelPlugin, Phase, option
from gentool.errors import PluginError
from gentool.plugins.dcgan import plugin as dcgan
from gentool.plugins.dcgan.model import DCGAN
from gentool.plugins.vae import plugin as vae
from gentool.plugins.vae.model import VAE
from gentool.registry import discover
from gentool.testing import CHECKS, CheckFailed, check_plugin, checks_for, parametrize_with_checks

# Every model gentool ships, as the registry finds them: a new one joins this test by itself.
BUILT_IN = [entry.plugin for entry in discover() if entry.distribution == "gentool"]
CHECK = {check.name: check for check in CHECKS}


@parametrize_with_checks(BUILT_IN)
def test_built_in_plugins_pass_the_kit(plugin, check):
    check(plugin)


def broken(base: ModelPlugin, model_class: type, **changes) -> ModelPlugin:
    return replace(base, build=lambda config, spec: model_class(config, spec), **changes)


def test_a_module_that_imports_torch_fails(tmp_path, monkeypatch):
    (tmp_path / "heavy_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass, replace
            import torch  # the fault: torch at module level
            from gentool.api import option
            from gentool.plugins.dcgan import plugin as dcgan

            @dataclass(frozen=True)
            class Config:
                image_size: int = option(16, "side")

            plugin = replace(dcgan, name="heavy", Config=Config, test_config={})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import heavy_plugin

    with pytest.raises(CheckFailed, match=r"importing heavy_plugin loads \['torch'\]"):
        CHECK["import_leaves_torch_unloaded"](heavy_plugin.plugin)


def test_an_unregistered_plugin_fails_the_entry_point_check():
    with pytest.raises(CheckFailed, match="no entry point named 'nowhere' in the gentool.models"):
        CHECK["entry_point_resolves"](replace(dcgan, name="nowhere"))


def test_undescribed_config_fields_fail():
    @dataclass(frozen=True)
    class Config:
        image_size: int = option(16, "")

    with pytest.raises(CheckFailed, match="config fields without a description: image_size"):
        CHECK["config_defaults_validate"](replace(dcgan, Config=Config, test_config={}))


def test_a_plugin_that_swallows_unknown_keys_fails():
    class Lenient(ModelPlugin):
        def parse_config(self, values=None):
            known = {field.name for field in self.config_fields()}
            return super().parse_config({k: v for k, v in (values or {}).items() if k in known})

    lenient = Lenient(**{field: getattr(dcgan, field) for field in dcgan.__dataclass_fields__})
    with pytest.raises(CheckFailed, match="an unknown config key was accepted"):
        CHECK["config_rejects_unknown_keys"](lenient)


def test_a_config_that_toml_cannot_carry_fails():
    @dataclass(frozen=True)
    class Config:
        image_size: int = option(16, "side")
        limit: int | None = option(5, "a cap")

    plugin = replace(dcgan, Config=Config, test_config={"limit": None})
    with pytest.raises(CheckFailed, match="the config changes through TOML"):
        CHECK["config_round_trips"](plugin)


def test_an_option_bound_the_optimizer_refuses_fails():
    @dataclass(frozen=True)
    class Config(dcgan.Config):
        beta2: float = option(0.999, "Adam β2", min=0, max=1)  # Adam takes β2 < 1 only

    with pytest.raises(CheckFailed, match="beta2=1 passes the config's bounds but"):
        CHECK["number_bounds_configure_optimizers"](replace(dcgan, Config=Config))


def test_a_build_that_returns_no_module_fails():
    plugin = replace(dcgan, build=lambda config, spec: {"not": "a module"})
    with pytest.raises(CheckFailed, match="build returned dict, not a torch.nn.Module"):
        CHECK["builds_on_cpu"](plugin)


def test_a_parameter_outside_the_loss_fails():
    class Unused(DCGAN):
        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.forgotten = torch.nn.Linear(2, 2)

        def configure_optimizers(self):
            optimizers = super().configure_optimizers()
            optimizers["g"].add_param_group({"params": self.forgotten.parameters()})
            return optimizers

    with pytest.raises(CheckFailed, match="2 trainable parameters did not change.*forgotten"):
        CHECK["training_step_updates_parameters"](broken(dcgan, Unused))


def test_a_parameter_in_two_optimizers_fails():
    class Tangled(DCGAN):
        def configure_optimizers(self):
            optimizers = super().configure_optimizers()
            optimizers["d"] = torch.optim.Adam(self.parameters(), lr=1e-3)
            return optimizers

    with pytest.raises(CheckFailed, match="parameter .* is in optimizers 'd' and 'g'"):
        CHECK["training_step_updates_parameters"](broken(dcgan, Tangled))


def test_stepping_an_optimizer_behind_the_trainers_back_fails():
    class Bypassing(DCGAN):
        def training_step(self, batch, ctx):
            logs = super().training_step(batch, ctx)
            ctx.optimizers["g"].step()  # not through ctx.step: gradient scaling would miss it
            return logs

    with pytest.raises(CheckFailed, match="parameters changed after the last ctx.step"):
        CHECK["training_step_updates_parameters"](broken(dcgan, Bypassing))


def test_non_finite_logs_fail():
    class Diverging(VAE):
        def training_step(self, batch, ctx):
            logs = super().training_step(batch, ctx)
            return {**logs, "kl": torch.tensor(float("inf"))}

    with pytest.raises(CheckFailed, match="non-finite values"):
        CHECK["training_step_updates_parameters"](broken(vae, Diverging))


def test_samples_outside_the_value_range_fail():
    class Unsquashed(DCGAN):
        def sample(self, n, *, labels=None, generator=None):
            return super().sample(n, generator=generator) + 2.0

    with pytest.raises(CheckFailed, match=r"outside the value range \[-1.0, 1.0\]"):
        CHECK["sample_shape_dtype_range"](broken(dcgan, Unsquashed))


def test_samples_of_the_wrong_shape_fail():
    class Flat(DCGAN):
        def sample(self, n, *, labels=None, generator=None):
            return super().sample(n, generator=generator).flatten(1)

    with pytest.raises(
        CheckFailed, match=r"sample returned \(5, 768\), expected .*\(5, 3, 16, 16\)"
    ):
        CHECK["sample_shape_dtype_range"](broken(dcgan, Flat))


def test_reconstructions_outside_the_value_range_fail():
    class Logits(VAE):
        def reconstruct(self, x):
            return self.decoder(self.encode(x)) * 100

    with pytest.raises(CheckFailed, match="reconstruct returned values in"):
        CHECK["reconstruct_shape_dtype_range"](broken(vae, Logits))


def test_codes_without_a_batch_dimension_fail():
    class Pooled(VAE):
        def encode(self, x):
            return super().encode(x).mean(dim=0)

    with pytest.raises(CheckFailed, match=r"encode of 8 images returned \(4,\)"):
        CHECK["encode_gives_one_code_per_image"](broken(vae, Pooled))


def test_samples_that_ignore_the_generator_fail():
    class Unseeded(DCGAN):
        def sample(self, n, *, labels=None, generator=None):
            return super().sample(n)  # draws from the global generator

    with pytest.raises(CheckFailed, match="same seed differ"):
        CHECK["same_seed_same_output"](broken(dcgan, Unseeded))


def test_state_outside_the_state_dict_fails():
    class Hidden(DCGAN):
        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.brightness = torch.zeros(())  # a plain attribute, not a registered buffer

        def training_step(self, batch, ctx):
            self.brightness = self.brightness + 0.5
            return super().training_step(batch, ctx)

        def sample(self, n, *, labels=None, generator=None):
            images = super().sample(n, generator=generator)
            return (images * 0.5 + self.brightness * 0.1).clamp(-1, 1)

    with pytest.raises(CheckFailed, match="loaded from its safetensors state_dict gives other"):
        CHECK["save_load_gives_identical_outputs"](broken(dcgan, Hidden))


def test_check_plugin_raises_or_warns():
    faulty = replace(dcgan, name="nowhere")
    with pytest.raises(CheckFailed, match="nowhere: entry_point_resolves: no entry point"):
        check_plugin(faulty)
    with pytest.warns(UserWarning, match="entry_point_resolves"):
        results = check_plugin(faulty, on_fail="warn")
    assert [result.check for result in results if not result.passed] == ["entry_point_resolves"]
    assert len(results) == len(checks_for(dcgan))


@parametrize_with_checks(
    [replace(dcgan, name="nowhere")],
    expected_failed_checks={"entry_point_resolves": "this plugin is deliberately not installed"},
)
def test_expected_failures_are_strict_xfails(plugin, check):
    check(plugin)


def test_unknown_expected_failures_are_refused():
    with pytest.raises(ValueError, match="unknown check names"):
        parametrize_with_checks([dcgan], expected_failed_checks={"no_such_check": "why"})


def test_phased_models_move_every_parameter_across_their_phases():
    from tests.test_train import TWO_STAGE

    CHECK["training_step_updates_parameters"](TWO_STAGE)  # each phase moves half the model


def test_a_phase_without_an_optimizer_of_its_own_fails():
    from tests.test_train import TWO_STAGE, TwoStage

    class Unnamed(TwoStage):
        def phases(self):
            return [Phase("encoder", 1), Phase("decoder", 1)]

    with pytest.raises(PluginError, match="phase 'encoder' must name one of the optimizers"):
        CHECK["training_step_updates_parameters"](replace(TWO_STAGE, build=Unnamed))


def test_phases_may_share_parameters_between_their_optimizers():
    from tests.test_train import TWO_STAGE, TwoStage

    class FineTuned(TwoStage):
        def phases(self):
            return [*super().phases(), Phase("fine-tune", 1, "everything")]

        def configure_optimizers(self):
            everything = torch.optim.SGD(self.parameters(), lr=0.1)
            return {**super().configure_optimizers(), "everything": everything}

    CHECK["training_step_updates_parameters"](replace(TWO_STAGE, build=FineTuned))


def test_the_guide_lists_every_check():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    assert [check.name for check in CHECKS if f"| `{check.name}` |" not in guide] == []


def test_a_variant_of_an_installed_plugin_with_another_test_config_resolves():
    (entry_point_resolves,) = [check for check in CHECKS if check.name == "entry_point_resolves"]
    entry_point_resolves(replace(dcgan, test_config={**dcgan.test_config, "latent_dim": 3}))


def test_each_test_config_is_checked_as_a_case_of_its_own():
    varied = replace(vae, test_configs=({**vae.test_config, "recon_loss": "mse"},))
    ids = [case.id for case in parametrize_with_checks([varied]).args[1]]
    assert "vae-config1-training_step_updates_parameters" in ids
    assert "vae-config1-import_leaves_torch_unloaded" not in ids  # the same for every config
