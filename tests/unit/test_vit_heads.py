"""Attention heads of the Vision Transformer (models/vit.py, models/vit_groups.py): prunable with the MLP neurons,
masked == physically sliced, the sliced attention equal to multi-head attention computed by hand without the
removed heads, FLOPs and parameters after head removal equal to hand formulas, exports and the rebuild of a
pruned vit-tiny checkpoint, and timm's key names and shapes unchanged."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from pruning_core import Workbench, make_method
from pruning_core.data import synthetic_images
from pruning_core.export import export_plan
from pruning_core.importance.criteria import channel_scores
from pruning_core.loading import build_pruned_architecture
from pruning_core.metrics import count_flops, parameter_count
from pruning_core.models import ARCHITECTURES
from pruning_core.models.vit import VisionTransformer
from pruning_core.plan import Plan
from pruning_core.structure import GroupError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE, PATCH, CLASSES, DIM, DEPTH, HEADS, MLP = 32, 8, 10, 48, 2, 4, 96
D = DIM // HEADS  # head_dim 12
TOKENS = (IMAGE // PATCH) ** 2 + 1  # 17


def _small_vit(seed: int = 0) -> VisionTransformer:
    """The small ViT with weights large enough that attention is far from uniform (timm's std 0.02 initialisation
    makes every head average its tokens, which would hide a wrong head slice)."""
    torch.manual_seed(seed)
    model = VisionTransformer(IMAGE, PATCH, CLASSES, DIM, DEPTH, HEADS, MLP).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]) if p.ndim >= 2 else 0.3)
    return model


@functools.cache
def _workbench() -> Workbench:
    return Workbench(_small_vit(), synthetic_images(16, (3, IMAGE, IMAGE), CLASSES), device="cpu")


def _outputs(wb: Workbench, plan: Plan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.nn.Module]:
    small = wb.sliced_model(plan)
    with torch.no_grad():
        dense = wb.model(wb.eval_x)
        sliced = small(wb.eval_x)
        with wb.applied(plan) as masked_model:
            masked = masked_model(wb.eval_x)
    return dense, masked, sliced, small


def _plan(pruned: dict[str, list[int]]) -> Plan:
    return Plan("hand", 0.5, "structured", pruned_channels={k: torch.tensor(v, dtype=torch.long)
                                                            for k, v in pruned.items()})


def _hand_parameters(heads: list[int], widths: list[int]) -> int:
    """Parameters of the small ViT with ``heads[i]`` heads of D and ``widths[i]`` MLP neurons in block i."""
    total = 3 * PATCH * PATCH * DIM + DIM + DIM + TOKENS * DIM  # patch conv, cls token, position embeddings
    for h, m in zip(heads, widths, strict=True):
        total += 2 * 2 * DIM  # norm1, norm2
        total += (DIM + 1) * 3 * h * D + h * D * DIM + DIM  # qkv, proj
        total += (DIM + 1) * m + m * DIM + DIM  # fc1, fc2
    return total + 2 * DIM + DIM * CLASSES + CLASSES  # norm, head


def _hand_flops(heads: list[int], widths: list[int]) -> int:
    """FLOPs (2 per multiply-add, batch 1) of the matrix products: patch conv, per block qkv, Q K^T and A V
    (2 T^2 d multiply-adds per head), proj, fc1, fc2, and the classifier on the class token."""
    t = TOKENS
    total = 2 * (t - 1) * DIM * 3 * PATCH * PATCH
    for h, m in zip(heads, widths, strict=True):
        total += 2 * t * DIM * 3 * h * D + 2 * 2 * h * t * t * D + 2 * t * h * D * DIM + 2 * 2 * t * DIM * m
    return total + 2 * DIM * CLASSES


def test_groups_are_the_heads_and_mlp_neurons_of_every_block():
    groups = _workbench().groups
    assert [g.name for g in groups.groups] == ["blocks.0.attn.heads", "blocks.0.mlp.fc1", "blocks.1.attn.heads",
                                              "blocks.1.mlp.fc1"]
    assert [g.size for g in groups.groups] == [HEADS, MLP, HEADS, MLP]
    heads = groups.by_name["blocks.1.attn.heads"]
    assert heads.producers == ["blocks.1.attn.qkv"] and heads.consumers == ["blocks.1.attn.proj"]
    assert "bare nn.Parameter" in groups.skipped[0][1] and groups.ignored == ["head"]
    # head 2's rows of the fused [q | k | v] projection and its columns of proj, listed by hand
    qkv = next(m for m in heads.members if m.module == "blocks.1.attn.qkv" and m.param == "weight")
    rows = sorted(int(r) for r, h in zip(qkv.target_idx, qkv.root_idx, strict=True) if h == 2)
    assert rows == [part * DIM + 2 * D + j for part in range(3) for j in range(D)]
    proj = next(m for m in heads.members if m.module == "blocks.1.attn.proj")
    assert proj.dim == 1 and [int(c) for c in proj.target_idx[proj.root_idx == 2]] == list(range(2 * D, 3 * D))


@pytest.mark.parametrize("pruned", [
    {"blocks.0.attn.heads": [0]},
    {"blocks.1.attn.heads": [1, 3]},
    {"blocks.0.attn.heads": [0, 1, 2], "blocks.1.attn.heads": [2], "blocks.0.mlp.fc1": list(range(0, 96, 3))},
    {"blocks.0.attn.heads": [3], "blocks.1.attn.heads": [0, 2, 3], "blocks.0.mlp.fc1": [5, 7],
     "blocks.1.mlp.fc1": list(range(40, 95))},
])
def test_hand_plans_give_the_same_outputs_masked_and_sliced(pruned):
    wb = _workbench()
    dense, masked, sliced, small = _outputs(wb, _plan(pruned))
    scale = float(masked.abs().max())
    assert float((sliced - masked).abs().max()) <= 1e-5 * scale
    assert float((dense - masked).abs().max()) > 1e-3 * scale  # the plan did change the network
    heads = [HEADS - len(pruned.get(f"blocks.{i}.attn.heads", [])) for i in range(DEPTH)]
    widths = [MLP - len(pruned.get(f"blocks.{i}.mlp.fc1", [])) for i in range(DEPTH)]
    assert [b.attn.num_heads for b in small.blocks] == heads
    assert [tuple(b.attn.qkv.weight.shape) for b in small.blocks] == [(3 * h * D, DIM) for h in heads]
    assert [b.attn.qkv.out_features for b in small.blocks] == [3 * h * D for h in heads]
    assert [b.mlp.fc1.out_features for b in small.blocks] == widths
    assert parameter_count(small) == _hand_parameters(heads, widths)
    assert wb.evaluate_plan(_plan(pruned), structured="masked").params == _hand_parameters(heads, widths)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_group_l1_gives_the_same_outputs_masked_and_sliced(ratio):
    wb = _workbench()
    plan = make_method("group-l1").prepare(wb).plan(ratio)
    dense, masked, sliced, small = _outputs(wb, plan)
    scale = float(masked.abs().max())
    assert float((sliced - masked).abs().max()) <= 1e-5 * scale
    assert float((dense - masked).abs().max()) > 1e-3 * scale
    kept_heads = HEADS - round(ratio * HEADS)
    assert [b.attn.num_heads for b in small.blocks] == [kept_heads] * DEPTH
    assert [b.mlp.fc1.out_features for b in small.blocks] == [MLP - round(ratio * MLP)] * DEPTH


def _attention_by_hand(weights: dict[str, torch.Tensor], x: torch.Tensor, heads: list[int]) -> torch.Tensor:
    """Multi-head self-attention (Vaswani et al. 2017, Eq. 1) of the dense block's weights over the heads in
    ``heads`` only, one head at a time: sum_h softmax(Q_h K_h^T / sqrt(d)) V_h W_o[:, h]^T + b_o, with Q_h, K_h,
    V_h the rows of head h in the query, key and value thirds of the fused projection."""
    w, b = weights["qkv.weight"].double(), weights["qkv.bias"].double()
    x = x.double()
    out = weights["proj.bias"].double().expand(x.shape[0], x.shape[1], DIM).clone()
    for h in heads:
        q, k, v = (x @ w[part * DIM + h * D: part * DIM + (h + 1) * D].T + b[part * DIM + h * D:
                                                                              part * DIM + (h + 1) * D]
                   for part in range(3))
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D), dim=-1)
        out += (a @ v) @ weights["proj.weight"].double()[:, h * D:(h + 1) * D].T
    return out


@pytest.mark.parametrize("removed", [[1], [0, 3], [0, 1, 2]])
def test_a_sliced_attention_is_attention_computed_by_hand_without_the_removed_heads(removed):
    wb = _workbench()
    weights = {k: v.detach().clone() for k, v in wb.model.blocks[1].attn.state_dict().items()}
    small = wb.sliced_model(_plan({"blocks.1.attn.heads": removed}))
    x = torch.randn(3, TOKENS, DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = small.blocks[1].attn(x).double()
        full = wb.model.blocks[1].attn(x).double()
    kept = [h for h in range(HEADS) if h not in removed]
    torch.testing.assert_close(got, _attention_by_hand(weights, x, kept), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, _attention_by_hand(weights, x, list(range(HEADS))), rtol=1e-5, atol=1e-5)
    assert float((got - full).abs().max()) > 1e-2


def test_a_sliced_model_regroups_at_its_head_counts_and_keeps_one_head():
    wb = _workbench()
    small = wb.sliced_model(_plan({"blocks.0.attn.heads": [0, 1, 2], "blocks.1.attn.heads": [1]}))
    again = small.channel_groups()
    # block 0 has one head left: a group of one channel cannot be pruned, so it has no head group
    assert [(g.name, g.size) for g in again.groups] == [("blocks.0.mlp.fc1", MLP), ("blocks.1.attn.heads", 3),
                                                        ("blocks.1.mlp.fc1", MLP)]
    with pytest.raises(GroupError, match="at least one must stay"):
        wb.groups.removed_indices({"blocks.0.attn.heads": torch.arange(HEADS)})


def test_magnitude_and_random_criteria_score_heads_as_their_formulas():
    wb = _workbench()
    qkv, proj = wb.model.blocks[0].attn.qkv.weight.double(), wb.model.blocks[0].attn.proj.weight.double()

    def head_slices(h):
        rows = torch.cat([torch.arange(part * DIM + h * D, part * DIM + (h + 1) * D) for part in range(3)])
        return qkv[rows], proj[:, h * D:(h + 1) * D]

    l1 = [sum(float(s.abs().sum()) for s in head_slices(h)) for h in range(HEADS)]
    l2 = [sum(float(s.norm()) for s in head_slices(h)) for h in range(HEADS)]  # DepGraph: sum of per-tensor norms
    torch.testing.assert_close(channel_scores(wb, "l1")["blocks.0.attn.heads"], torch.tensor(l1, dtype=torch.float64))
    torch.testing.assert_close(channel_scores(wb, "l2")["blocks.0.attn.heads"], torch.tensor(l2, dtype=torch.float64))
    random = channel_scores(wb, "random")
    assert random["blocks.1.attn.heads"].shape == (HEADS,) and len(set(random["blocks.1.attn.heads"].tolist())) == 4


@pytest.mark.parametrize("key", ["taylor", "grad-x-act", "activation-mean"])
def test_gradient_and_activation_criteria_score_every_head(key):
    scores = channel_scores(_workbench(), key)
    for i in range(DEPTH):
        s = scores[f"blocks.{i}.attn.heads"]
        assert s.shape == (HEADS,) and bool(torch.isfinite(s).all()) and bool((s >= 0).all()) and float(s.max()) > 0


def test_flops_and_parameters_after_head_removal_match_the_hand_formulas():
    wb = _workbench()
    x = wb.example_input
    total, per_layer = count_flops(wb.model, x)
    assert total == sum(per_layer.values()) == _hand_flops([HEADS] * DEPTH, [MLP] * DEPTH)
    assert per_layer["blocks.0.attn.dot_product"] == 2 * 2 * HEADS * TOKENS * TOKENS * D
    small = wb.sliced_model(_plan({"blocks.0.attn.heads": [1, 2, 3], "blocks.1.attn.heads": [0],
                                   "blocks.1.mlp.fc1": list(range(30))}))
    total, per_layer = count_flops(small, x)
    assert total == sum(per_layer.values()) == _hand_flops([1, 3], [MLP, MLP - 30])
    assert per_layer["blocks.1.attn.dot_product"] == 2 * 2 * 3 * TOKENS * TOKENS * D
    assert parameter_count(small) == _hand_parameters([1, 3], [MLP, MLP - 30])
    assert parameter_count(wb.model) == _hand_parameters([HEADS] * DEPTH, [MLP] * DEPTH)


def test_a_model_with_pruned_heads_exports_and_reloads():
    wb = _workbench()
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    bundle = export_plan(wb, plan, formats=("state_dict", "torch.export", "torchscript"), latency_repeats=1,
                         latency_warmup=0)
    formats = bundle.report["formats"]
    assert {f: formats[f]["status"] for f in formats} == {"state_dict": "ok", "torch.export": "ok", "torchscript": "ok"}
    assert formats["torch.export"]["round_trip_max_abs_difference"] <= 1e-4
    assert formats["torchscript"]["round_trip_max_abs_difference"] <= 1e-4
    after = bundle.report["after"]
    assert after["params"] == _hand_parameters([2, 2], [48, 48])
    assert after["flops"] == _hand_flops([2, 2], [48, 48])


# timm vit_tiny_patch16_224's state_dict, written out by hand: 4 + 12 x 12 + 4 = 152 tensors
def _timm_vit_tiny_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"cls_token": (1, 1, 192), "pos_embed": (1, 197, 192), "patch_embed.proj.weight": (192, 3, 16, 16),
              "patch_embed.proj.bias": (192,)}
    for i in range(12):
        b = f"blocks.{i}"
        shapes.update({f"{b}.norm1.weight": (192,), f"{b}.norm1.bias": (192,), f"{b}.attn.qkv.weight": (576, 192),
                       f"{b}.attn.qkv.bias": (576,), f"{b}.attn.proj.weight": (192, 192), f"{b}.attn.proj.bias": (192,),
                       f"{b}.norm2.weight": (192,), f"{b}.norm2.bias": (192,), f"{b}.mlp.fc1.weight": (768, 192),
                       f"{b}.mlp.fc1.bias": (768,), f"{b}.mlp.fc2.weight": (192, 768), f"{b}.mlp.fc2.bias": (192,)})
    return {**shapes, "norm.weight": (192,), "norm.bias": (192,), "head.weight": (1000, 192), "head.bias": (1000,)}


def test_vit_tiny_keeps_timm_keys_shapes_and_parameter_count():
    with torch.device("meta"):
        model = ARCHITECTURES["vit-tiny"].build()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _timm_vit_tiny_shapes()
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
    assert [b.attn.num_heads for b in model.blocks] == [3] * 12


def test_a_pruned_vit_tiny_checkpoint_is_rebuilt_at_its_head_counts():
    data = synthetic_images(2, (3, 224, 224), 10)
    wb = Workbench(ARCHITECTURES["vit-tiny"].build(), data, device="cpu")
    assert [g.size for g in wb.groups.groups] == [3, 768] * 12
    pruned = {f"blocks.{i}.attn.heads": [i % 3] for i in range(12)}
    pruned.update({"blocks.5.attn.heads": [0, 2], "blocks.3.mlp.fc1": list(range(0, 768, 2))})
    small = wb.sliced_model(_plan(pruned), share_untouched=False)
    state = small.state_dict()
    assert state.keys() == _timm_vit_tiny_shapes().keys()
    rebuilt = build_pruned_architecture("vit-tiny", state)
    assert [b.attn.num_heads for b in rebuilt.blocks] == [2] * 5 + [1] + [2] * 6
    assert rebuilt.blocks[5].attn.qkv.weight.shape == (192, 192) and rebuilt.blocks[3].mlp.fc1.out_features == 384
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wb.eval_x), small(wb.eval_x), rtol=0, atol=0)
        with wb.applied(_plan(pruned)) as masked:
            torch.testing.assert_close(small(wb.eval_x), masked(wb.eval_x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("key", ["ispasp", "id"])
def test_unit_methods_prune_heads_with_the_same_outputs_masked_and_sliced(key):
    wb = _workbench()
    assert {u.group: (u.layout, u.positions) for u in wb.units}["blocks.0.attn.heads"] == ("flatten", D)
    plan = make_method(key).prepare(wb).plan(0.5)
    dense, masked, sliced, small = _outputs(wb, plan)
    scale = float(masked.abs().max())
    assert float((sliced - masked).abs().max()) <= 1e-5 * scale
    assert [b.attn.num_heads for b in small.blocks] == [HEADS // 2] * DEPTH


def test_plan_flops_shrink_the_attention_matmuls_with_the_heads():
    wb = _workbench()
    plan = _plan({"blocks.0.attn.heads": [1, 2, 3], "blocks.1.attn.heads": [0], "blocks.1.mlp.fc1": list(range(30))})
    _, flops = wb.plan_cost(plan)
    assert abs(flops - _hand_flops([1, 3], [MLP, MLP - 30])) <= 1e-6 * flops  # float32 kept fractions
    assert wb.evaluate_plan(plan, structured="masked").flops == flops
