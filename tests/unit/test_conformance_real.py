"""The conformance suite on the real architectures (pruning_core.models), at sizes that run in seconds: the same
property checks as tests/unit/test_conformance.py (imported from it), on random Gaussian inputs with random
labels and BatchNorm statistics set to the batch's own (see test_architectures.with_batch_statistics).

Families and sizes: CIFAR ResNet-20 at 8x8 (ResNet-56 is the same class with 9 blocks per stage); VGG-16-BN's
code (``models.vgg.VGG``) at configuration D's depth with 8-16 channels per conv and a 32-wide classifier, at
32x32 (five max-pools need 32); a ViT through ``VisionTransformer`` (32x32, patch 8, width 48, 2 blocks, 4 heads,
MLP 96; its attention heads and MLP neurons are channel groups); MobileNetV2 and EfficientNet-Lite0 (2.2M and
3.4M parameters at 10 classes) and torchvision-layout ResNet-18 / ResNet-50 (11.2M and 23.5M: their widths are
fixed) at 16x16.

Cost (one thread): scoring every weight (magnitude, SAP, OBS, blocks) and training (ISPASP, SeqAttn, AC/DC) grow
with the parameters, integrated gradients and the greedy FLOPs path with forward passes; on the nets of millions
of parameters a method takes up to a minute (SAP 40 s and allocation 13 s on ResNet-18; ID's FLOPs path 2 min on
MobileNetV2, whose units hold a fifth of the FLOPs). ``SUBSET`` names the methods each family runs where it does
not run all of them, and the skip says so: every method runs on at least one family, and every family runs the
structured methods that follow its dependency groups (where a wrong group would show as masked != sliced).
"""

from __future__ import annotations

import functools

import pytest
import torch
from test_architectures import with_batch_statistics
from test_conformance import (
    check_deterministic,
    check_finite_and_exact_restore,
    check_kept_fraction,
    check_masked_equals_sliced,
    check_plan_json,
    check_ratio_zero_identity,
)

from pruning_core import REGISTRY, Workbench, make_method
from pruning_core.data import synthetic_images
from pruning_core.models import (
    VGG,
    VisionTransformer,
    efficientnet_lite0,
    mobilenet_v2,
    resnet20,
    torchvision_resnet18,
    torchvision_resnet50,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NARROW_VGG16 = (8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 16, 16, 16, "M", 16, 16, 16, "M")  # configuration D's depth

# name -> (builder at 10 classes, input resolution)
FAMILIES = {
    "resnet20-cifar": (lambda: resnet20(10), 8),
    "vgg16-bn-narrow": (lambda: VGG(NARROW_VGG16, 10, hidden=32), 32),
    "vit-small": (lambda: VisionTransformer(image=32, patch=8, num_classes=10, dim=48, depth=2, heads=4,
                                            mlp_hidden=96), 32),
    "mobilenet-v2": (lambda: mobilenet_v2(10), 16),
    "efficientnet-lite0": (lambda: efficientnet_lite0(10), 16),
    "resnet18": (lambda: torchvision_resnet18(10), 16),
    "resnet50": (lambda: torchvision_resnet50(10), 16),
}
SAMPLES = 8  # calibration = evaluation = training split

STRUCTURAL = ("group-l1", "group-l2", "random-channels", "network-slimming", "unit-group-l1", "random-units",
              "activation-magnitude", "id-nocorrection", "ispasp-dense", "group-taylor", "group-grad-x-act",
              "group-activation", "group-apoz")
UNSTRUCTURED = ("magnitude-global", "magnitude-layer", "random", "block-magnitude")
# family -> the methods it runs where it does not run every registered one, and why
SUBSET = {
    "vgg16-bn-narrow": ([k for k in REGISTRY if k != "id-flops"],
                        "ID's FLOPs path runs on ResNet-20 and the ViT (14 s here)"),
    "mobilenet-v2": ([*STRUCTURAL, *UNSTRUCTURED, "id"],
                     "2.2M parameters: SAP, training and many-pass methods take 5-130 s each here"),
    "efficientnet-lite0": ([*STRUCTURAL, *UNSTRUCTURED],
                           "3.4M parameters: SAP, training and many-pass methods take 5-130 s each here"),
    "resnet18": ([*STRUCTURAL, "magnitude-global"],
                 "11.2M parameters (fixed widths): the other methods take 1-45 s each here"),
    "resnet50": (["group-l1", "random-channels", "network-slimming", "unit-group-l1", "id-nocorrection",
                  "group-taylor", "group-apoz"],
                 "23.5M parameters (fixed widths): the other methods take seconds to minutes each here"),
}
CASES = [(key, model) for key in REGISTRY for model in FAMILIES]
# (method, model) pairs failing for a known reason, each with the reason: a strict xfail, so a fix is noticed
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@functools.cache
def workbench(model: str) -> Workbench:
    build, res = FAMILIES[model]
    torch.manual_seed(0)
    data = synthetic_images(SAMPLES, (3, res, res), 10)
    return Workbench(with_batch_statistics(build(), data.train.x), data, device="cpu", name=model)


@functools.cache
def plan_at(key: str, model: str):
    """The prepared method's ``plan``, memoised per ratio (plans are values; training methods train per call)."""
    return functools.cache(make_method(key).prepare(workbench(model)).plan)


@pytest.fixture
def case(request):
    key, model = request.param
    if model in SUBSET and key not in SUBSET[model][0]:
        pytest.skip(f"{key} on {model}: not in this family's subset ({SUBSET[model][1]})")
    wb, spec = workbench(model), REGISTRY[key]
    reason = spec.unavailable(wb)
    if reason:
        pytest.skip(f"{key} on {model}: {reason}")
    return spec, wb, plan_at(key, model)


parametrize = pytest.mark.parametrize("case", [
    pytest.param(c, id=f"{c[0]}@{c[1]}", marks=[pytest.mark.xfail(reason=KNOWN_BUGS[c], strict=True)]
                 if c in KNOWN_BUGS else []) for c in CASES], indirect=True)


@parametrize
def test_ratio_zero_leaves_outputs_unchanged(case):
    check_ratio_zero_identity(*case)


@parametrize
def test_kept_fraction_is_within_one_unit_of_the_ratio(case):
    check_kept_fraction(*case)


@parametrize
def test_structured_plans_give_the_same_outputs_masked_and_sliced(case):
    check_masked_equals_sliced(*case)


@parametrize
def test_the_same_seed_gives_the_same_plan(case):
    check_deterministic(*case)


@parametrize
def test_the_plan_json_round_trips(case):
    check_plan_json(*case)


@parametrize
def test_outputs_stay_finite_and_restore_is_exact(case):
    check_finite_and_exact_restore(*case)


def test_every_method_runs_on_some_real_family():
    runs = {k for k in REGISTRY for m in FAMILIES
            if (m not in SUBSET or k in SUBSET[m][0]) and REGISTRY[k].unavailable(workbench(m)) is None}
    assert runs == set(REGISTRY), set(REGISTRY) - runs


def test_the_vit_prunes_attention_heads_and_mlp_neurons():
    groups = workbench("vit-small").groups.groups
    assert len(groups) == 4 and sum(g.size for g in groups) == 2 * (4 + 96), [(g.name, g.size) for g in groups]
