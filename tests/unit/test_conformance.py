"""The conformance suite: every registered method, on every demo model it supports, gets the same tests by being
registered (as captum tests its attribution methods from one config). A method that cannot meet a property says
why in its spec (``MethodSpec.exempt``), and the suite skips it with that reason.

Properties (``pruning_core.methods.PROPERTIES``): ratio 0 leaves the outputs unchanged; the realised kept
fraction is within one channel per group (structured) or one weight per tensor (unstructured) of 1 - ratio;
structured plans give the same outputs masked and physically sliced, corrections included (atol 1e-5); the same
seed gives the same plan; the plan's JSON round-trips; outputs stay finite; restore is exact.
"""

from __future__ import annotations

import json

import pytest
import torch

from pruning_core import REGISTRY, make_method
from pruning_core.plan import Plan

DEMO = ("digits-mlp", "digits-cnn", "digits-resnet")
RATIO = 0.5
CASES = [(key, model) for key in REGISTRY for model in DEMO]
_prepared: dict = {}


@pytest.fixture
def case(request, demo_workbenches):
    key, model = request.param
    wb = demo_workbenches[model]
    spec = REGISTRY[key]
    reason = spec.unavailable(wb)
    if reason:
        pytest.skip(f"{key} on {model}: {reason}")
    if (key, model) not in _prepared:
        _prepared[(key, model)] = make_method(key).prepare(wb)
    return spec, wb, _prepared[(key, model)]


def _exempt(spec, prop: str) -> None:
    if prop in spec.exempt:
        pytest.skip(f"{spec.key} is exempt from {prop}: {spec.exempt[prop]}")


def _outputs(model, x):
    with torch.inference_mode():
        return model.eval()(x)


parametrize = pytest.mark.parametrize("case", CASES, indirect=True, ids=[f"{k}@{m}" for k, m in CASES])


# The property checks, shared with tests/unit/test_conformance_real.py (the real architectures at small sizes).
# ``plan_at(ratio)`` is the prepared method's ``plan`` (the real suite memoises it per ratio).
def check_ratio_zero_identity(spec, wb, plan_at) -> None:
    _exempt(spec, "ratio-zero-identity")
    x = wb.eval_x[:64]
    dense = _outputs(wb.model, x)
    with wb.applied(plan_at(0.0)) as model:
        torch.testing.assert_close(_outputs(model, x), dense, rtol=0, atol=1e-6)


def check_kept_fraction(spec, wb, plan_at) -> None:
    _exempt(spec, "kept-fraction")
    plan = plan_at(RATIO)
    if plan.is_structured:
        for g in wb.groups.groups:
            removed = len(plan.pruned_channels.get(g.name, []))
            assert abs((g.size - removed) - (1 - RATIO) * g.size) <= 1, (g.name, removed, g.size)
    else:
        kept = sum(int(m.sum()) for m in plan.masks.values())
        total = sum(m.numel() for m in plan.masks.values())
        assert abs(kept - (1 - RATIO) * total) <= len(plan.masks), (kept, total)


def check_masked_equals_sliced(spec, wb, plan_at) -> None:
    if spec.granularity != "structured":
        pytest.skip("unstructured plans are not sliced")
    _exempt(spec, "masked-equals-sliced")
    plan = plan_at(RATIO)
    x = wb.eval_x[:128]
    with wb.applied(plan) as masked:
        reference = _outputs(masked, x)
    small = wb.sliced_model(plan, share_untouched=False)
    torch.testing.assert_close(_outputs(small, x), reference, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < wb.dense_params


def check_deterministic(spec, wb, plan_at) -> None:
    _exempt(spec, "deterministic")
    a, b = plan_at(RATIO), make_method(spec.key).prepare(wb).plan(RATIO)
    assert a.method == b.method == spec.key and a.granularity == b.granularity
    for field in ("masks", "pruned_channels", "corrections"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys(), field
        assert all(torch.equal(x[k], y[k]) for k in x), field


def check_plan_json(spec, wb, plan_at) -> None:
    _exempt(spec, "plan-json")
    plan = plan_at(RATIO)
    sizes = wb.groups.sizes if plan.is_structured else None
    text = json.dumps(plan.to_json(sizes))
    assert json.loads(text) == json.loads(json.dumps(json.loads(text)))  # plain JSON, nothing lost on a reload
    back = Plan.from_json(json.loads(text))
    values = ("tensors", "corrected_tensors")  # masks and corrected weights travel in the weight files
    carried = {k: v for k, v in json.loads(text).items() if k not in values}
    assert {k: v for k, v in back.to_json(sizes).items() if k not in values} == carried
    assert back.pruned_channels.keys() == plan.pruned_channels.keys()
    assert all(torch.equal(back.pruned_channels[k], plan.pruned_channels[k].cpu()) for k in plan.pruned_channels)


def check_finite_and_exact_restore(spec, wb, plan_at, ratios=(RATIO, 0.9)) -> None:
    before = {k: v.clone() for k, v in wb.model.state_dict().items()}
    x = wb.eval_x[:64]
    for ratio in ratios:
        with wb.applied(plan_at(ratio)) as model:
            out = _outputs(model, x)
        if "finite-outputs" not in spec.exempt:
            assert torch.isfinite(out).all(), ratio
    if "exact-restore" not in spec.exempt:
        after = wb.model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)


@parametrize
def test_ratio_zero_leaves_outputs_unchanged(case):
    spec, wb, method = case
    check_ratio_zero_identity(spec, wb, method.plan)


@parametrize
def test_kept_fraction_is_within_one_unit_of_the_ratio(case):
    spec, wb, method = case
    check_kept_fraction(spec, wb, method.plan)


@parametrize
def test_structured_plans_give_the_same_outputs_masked_and_sliced(case):
    spec, wb, method = case
    check_masked_equals_sliced(spec, wb, method.plan)


@parametrize
def test_the_same_seed_gives_the_same_plan(case):
    spec, wb, method = case
    check_deterministic(spec, wb, method.plan)


@parametrize
def test_the_plan_json_round_trips(case):
    spec, wb, method = case
    check_plan_json(spec, wb, method.plan)


@parametrize
def test_outputs_stay_finite_and_restore_is_exact(case):
    spec, wb, method = case
    check_finite_and_exact_restore(spec, wb, method.plan)


def test_every_exemption_names_a_property_and_says_why():
    from pruning_core.methods import PROPERTIES

    for spec in REGISTRY.values():
        for prop, why in spec.exempt.items():
            assert prop in PROPERTIES and len(why) > 20, (spec.key, prop)
