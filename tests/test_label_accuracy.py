"""Label accuracy: the shape classifier names real shapes, the metric scores a model that draws
the asked class, one that ignores it and one that swaps it as each should score, and `gentool
eval` reports it for conditional models on the built-in shapes only."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gentool import synthetic
from gentool.api import DataSpec
from gentool.cli import app
from gentool.errors import GentoolError
from gentool.label_accuracy import classify, label_accuracy, load_classifier
from gentool.plugins.cgan import plugin as cgan

SHAPES = synthetic.SHAPE_CLASSES
# Measured on 3,000 fresh shapes (seed 0) at 32×32; docs/evaluation.md gives each size.
MIN_CLASSIFIER_ACCURACY = 0.97


def real_shapes(count: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = synthetic.make_shapes(count, size, seed=seed)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def test_the_classifier_names_real_shapes_of_every_class():
    images, labels = real_shapes(1200)
    predicted = classify(load_classifier(torch.device("cpu")), images)
    for index, name in enumerate(SHAPES):
        accuracy = (predicted[labels == index] == index).float().mean().item()
        assert accuracy >= MIN_CLASSIFIER_ACCURACY, (name, accuracy)


class ShapeDrawer(nn.Module):
    """A stand-in conditional model that "draws" real shapes: of the asked class, of a class
    chosen by `relabel(labels)`, or of random classes."""

    def __init__(self, relabel) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        images, labels = real_shapes(600, seed=3)
        self.pool = {index: images[labels == index] for index in range(len(SHAPES))}
        self.relabel = relabel

    def sample(self, n, *, labels=None, generator=None):
        shown = self.relabel(labels, generator)
        picks = [self.pool[int(k)][i % len(self.pool[int(k)])] for i, k in enumerate(shown)]
        return torch.stack(picks).float() / 127.5 - 1  # cgan's [-1, 1]


SPEC = DataSpec(3, 32, 32, SHAPES)


def test_a_model_that_draws_the_asked_class_scores_near_one():
    model = ShapeDrawer(lambda labels, generator: labels)
    values = label_accuracy(model, cgan, SPEC, 600, seed=0)
    assert set(values["label_accuracy_by_class"]) == set(SHAPES)
    assert min(values["label_accuracy_by_class"].values()) >= MIN_CLASSIFIER_ACCURACY
    assert values["label_accuracy"] == pytest.approx(
        sum(values["label_accuracy_by_class"].values()) / len(SHAPES)
    )


def test_a_model_that_ignores_the_label_scores_chance_and_one_that_swaps_it_zero():
    def random_class(labels, generator):
        return torch.randint(0, len(SHAPES), labels.shape, generator=generator)

    ignoring = label_accuracy(ShapeDrawer(random_class), cgan, SPEC, 1200, seed=0)
    assert ignoring["label_accuracy"] == pytest.approx(1 / 6, abs=0.04)
    swapped = ShapeDrawer(lambda labels, generator: (labels + 1) % len(SHAPES))
    assert label_accuracy(swapped, cgan, SPEC, 600, seed=0)["label_accuracy"] < 0.03


def test_a_run_s_own_class_order_is_matched_to_the_classifier_s_by_name():
    reordered = tuple(reversed(SHAPES))
    model = ShapeDrawer(lambda labels, generator: len(SHAPES) - 1 - labels)  # run index → shape
    values = label_accuracy(model, cgan, replace(SPEC, class_names=reordered), 600, seed=0)
    assert values["label_accuracy"] >= MIN_CLASSIFIER_ACCURACY


def test_classes_the_classifier_does_not_know_are_refused():
    model = ShapeDrawer(lambda labels, generator: labels)
    spec = replace(SPEC, class_names=("circle", "cat"))
    with pytest.raises(GentoolError, match="has classes circle, cat, of which cat is not a shape"):
        label_accuracy(model, cgan, spec, 60, seed=0)


TINY_CDCGAN = ["-o", "image_size=16", "-o", "latent_dim=8", "-o", "g_features=8",
               "-o", "d_features=8"]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def cdcgan_run(in_tmp):
    result = invoke("train", "cdcgan", *TINY_CDCGAN, "--limit", "48", "-b", "16", "--epochs",
                    "1", "--device", "cpu", "--run-dir", "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    return in_tmp / "run"


def test_eval_reports_label_accuracy_by_default_with_each_class_in_json(cdcgan_run):
    result = invoke("eval", "cdcgan", "--run", str(cdcgan_run), "--n", "60", "--json")
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)
    assert set(values["label_accuracy_by_class"]) == set(SHAPES)
    assert 0 <= values["label_accuracy"] <= 1 and "fid" in values
    table = invoke("eval", "cdcgan", "--run", str(cdcgan_run), "--n", "60", "--metrics", "labels")
    assert table.exit_code == 0, table.output
    assert "label_accuracy circle" in table.output and "fid" not in table.output
    logged = (cdcgan_run / "metrics.jsonl").read_text().splitlines()
    assert "label_accuracy_by_class" in json.loads(logged[-1])


def test_label_accuracy_is_left_out_by_default_on_other_classes_and_refused_when_asked(in_tmp):
    made = invoke("data", "make", "shapes", "pets", "--n", "32", "--size", "16")
    assert made.exit_code == 0, made.output
    (in_tmp / "pets" / "circle").rename(in_tmp / "pets" / "cat")
    trained = invoke("train", "cdcgan", *TINY_CDCGAN, "--data", "pets", "-b", "16", "--epochs",
                     "1", "--device", "cpu", "--run-dir", "run")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    default = invoke("eval", "cdcgan", "--run", "run", "--n", "20", "--json")
    assert default.exit_code == 0, default.output
    assert "label_accuracy" not in json.loads(default.output)
    asked = invoke("eval", "cdcgan", "--run", "run", "--n", "20", "--metrics", "labels")
    assert asked.exit_code == 1
    assert asked.output.strip().splitlines() == [
        "error: label accuracy needs a run on the built-in shapes (circle, square, triangle, "
        "cross, ring, star), and this cdcgan run has classes cat, cross, ring, square, star, "
        "triangle, of which cat is not a shape: leave out labels from --metrics"
    ]


def test_models_that_do_not_draw_a_chosen_class_refuse_the_metric():
    result = invoke("eval", "dcgan", "--metrics", "labels")
    assert result.exit_code == 1
    assert "dcgan does not draw images of a class it is asked for" in result.output


def test_training_refuses_eval_metrics_labels_for_other_classes_before_it_starts(in_tmp):
    made = invoke("data", "make", "shapes", "pets", "--n", "32", "--size", "16")
    assert made.exit_code == 0, made.output
    (in_tmp / "pets" / "circle").rename(in_tmp / "pets" / "cat")
    result = invoke("train", "cdcgan", *TINY_CDCGAN, "--data", "pets", "-b", "16", "--epochs",
                    "1", "--device", "cpu", "--run-dir", "run", "--eval-every", "1",
                    "--eval-metrics", "labels")  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: label accuracy needs a run on the built-in shapes (circle, square, triangle, "
        "cross, ring, star), and this cdcgan run has classes cat, cross, ring, square, star, "
        "triangle, of which cat is not a shape: leave out labels from --eval-metrics"
    ]
    assert not (in_tmp / "run").exists()
