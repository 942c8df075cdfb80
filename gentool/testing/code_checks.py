"""The checks of a model's codes and labels: encode, reconstruct, sample_latent, decode, and
that a conditional model's output depends on the label it is given.

Each calls the model as `gentool encode`, `reconstruct`, `interpolate` and `eval` do (through
`gentool.model_calls`), with codes as those commands make them: from `encode`, from
`sample_latent`, and, for continuous codes, the points of a walk between two of them.
"""

from __future__ import annotations

from collections.abc import Callable

from gentool.api import ModelPlugin
from gentool.testing.exercise import (
    CHECK_BATCH,
    build,
    check_images,
    class_labels,
    decode,
    encode,
    prior_codes,
    random_batch,
    reconstruct,
    sample,
)
from gentool.testing.rules import CheckFailed

WALK_ROWS = 2  # code pairs in the kit's walk, as `gentool interpolate --rows 2` draws them


def reconstruct_shape_dtype_range(plugin: ModelPlugin) -> None:
    model, spec = build(plugin)
    images = random_batch(plugin, spec).images
    check_images("reconstruct", reconstruct(plugin, model, images, spec), images.shape, plugin)


def encode_gives_one_code_per_image(plugin: ModelPlugin) -> None:
    import torch

    model, spec = build(plugin)
    codes = encode(plugin, model, random_batch(plugin, spec).images, spec)
    if codes.dtype not in (torch.float32, torch.int64):
        raise CheckFailed(
            f"encode returned {codes.dtype} codes: return float32 codes, or int64 indexes for "
            "discrete codes (a codebook's), which `gentool encode` stores as they are"
        )
    if codes.shape[0] != CHECK_BATCH:
        raise CheckFailed(f"encode of {CHECK_BATCH} images returned {codes.shape[0]} codes")


def sample_latent_gives_codes(plugin: ModelPlugin) -> None:
    import torch

    model, spec = build(plugin)
    first, again = (prior_codes(plugin, model, spec, WALK_ROWS, seed=4) for _ in range(2))
    if not torch.equal(first, again):
        raise CheckFailed(
            "sample_latent with generators of the same seed gave other codes: draw them from "
            "the `generator` argument"
        )


def decode_gives_images(plugin: ModelPlugin) -> None:
    """Decode every kind of code gentool decodes, as it decodes them."""
    model, spec = build(plugin)
    shape = (spec.channels, spec.height, spec.width)
    for origin, codes in _codes_to_decode(plugin, model, spec):
        labels = class_labels(spec, codes.shape[0])
        images = decode(plugin, model, codes, labels)
        check_images(f"decode of codes {origin}", images, (codes.shape[0], *shape), plugin)


def _codes_to_decode(plugin: ModelPlugin, model, spec):
    """(where the codes came from, codes): those of sample_latent and encode, and for
    continuous codes the middle of a walk between two, as `gentool interpolate` makes it."""
    from gentool.walks import slerp

    made = []
    if hasattr(model, "sample_latent"):
        made.append(("from sample_latent", prior_codes(plugin, model, spec, WALK_ROWS, seed=5)))
    if plugin.capabilities.encode:
        images = random_batch(plugin, spec).images[:WALK_ROWS]
        made.append(("from encode", encode(plugin, model, images, spec)))
    for origin, codes in list(made):
        if codes.is_floating_point():
            middle = slerp(codes[:1].expand_as(codes), codes.flip(0), 0.5)
            made.append((f"between two {origin.removeprefix('from ')} codes", middle))
    if not made:
        raise CheckFailed(
            "the model has decode but neither sample_latent nor encode, so gentool has no codes "
            "to decode: add sample_latent(n, *, labels=None, generator=None)"
        )
    return made


def output_depends_on_label(plugin: ModelPlugin) -> None:
    """A conditional model's images change with the label: decode the same codes (or sample
    from the same seed) as one class and as another."""
    import torch

    model, spec = build(plugin)
    first_class = torch.zeros(WALK_ROWS, dtype=torch.int64)
    other_class = torch.ones(WALK_ROWS, dtype=torch.int64)
    if hasattr(model, "decode"):
        _, codes = _codes_to_decode(plugin, model, spec)[0]
        first = decode(plugin, model, codes, first_class)
        other = decode(plugin, model, codes, other_class)
        what = "decode of the same codes"
    else:
        first = sample(plugin, model, spec, seed=6, labels=first_class[:1].expand(5))
        other = sample(plugin, model, spec, seed=6, labels=other_class[:1].expand(5))
        what = "samples from the same seed"
    if torch.equal(first, other):
        raise CheckFailed(
            f"{what} are identical for classes 0 and 1: the label is ignored; feed `labels` "
            "into the network (an embedding or a one-hot vector concatenated to its input)"
        )


def evaluation_metrics_are_numbers(plugin: ModelPlugin) -> None:
    """The model's own metrics, of real images as `gentool eval` gives them, are finite numbers
    by name, none of them one of the names gentool reports itself."""
    import math

    from gentool.evaluate import RESERVED_METRIC_NAMES
    from gentool.model_calls import call_evaluation_metrics
    from gentool.sampling import evaluating
    from gentool.testing.exercise import refused_as_failure

    model, spec = build(plugin)
    images = random_batch(plugin, spec).images
    with evaluating(model), refused_as_failure():
        values = call_evaluation_metrics(
            model, plugin, images, labels=class_labels(spec, images.shape[0])
        )
    clashes = sorted(set(values) & RESERVED_METRIC_NAMES)
    if clashes:
        raise CheckFailed(
            f"evaluation_metrics names {', '.join(clashes)}, which gentool reports itself: "
            "rename them"
        )
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        raise CheckFailed(
            f"evaluation_metrics of random images gave non-finite values {bad}: guard logs "
            "and divisions (log(p + 1e-10))"
        )


def has_method(method: str) -> Callable[[ModelPlugin], bool]:
    """Whether the model a plugin builds has `method` (a model that fails to build has none;
    builds_on_cpu reports why)."""

    def applies(plugin: ModelPlugin) -> bool:
        try:
            model, _ = build(plugin)
        except Exception:
            return False
        return callable(getattr(model, method, None))

    return applies


def conditional(plugin: ModelPlugin) -> bool:
    return plugin.capabilities.conditional
