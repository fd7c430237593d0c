"""Structured groups of a Vision Transformer (``models.vit``), built from its known layout (no tracing): the
attention heads and the MLP neurons of every block.

Per block i (heads as in Michel et al., "Are Sixteen Heads Really Better than One?", NeurIPS 2019; MLP neurons as
the hidden units of a two-layer MLP):

* ``blocks.i.attn.heads`` (one channel per head, H = qkv rows / (3 d) channels, d = ``head_dim``): head h spans
  rows h d .. h d + d - 1 of each of the q, k and v thirds of ``attn.qkv`` (weight and bias, dim 0), i.e. rows
  p H d + h d + j for p in {q, k, v} and j < d, and columns h d .. h d + d - 1 of ``attn.proj.weight`` (dim 1).
  Zeroing them makes the head's queries and keys zero (uniform attention) and its values zero, so its context is
  zero and the masked block computes exactly what the block without that head computes. A block with one head
  left has no head group (a group of one channel cannot be pruned).
* ``blocks.i.mlp.fc1`` (the MLP's hidden width; the name Torch-Pruning's trace gave the same group): row j of
  ``mlp.fc1`` (weight and bias, dim 0) and column j of ``mlp.fc2.weight`` (dim 1); GELU(0) = 0, so masking
  equals removal.

Not prunable: the embedding width, i.e. the residual stream (tied to the bare ``cls_token`` and ``pos_embed``
parameters, which the adapter does not slice; recorded in ``ModelGroups.skipped``), and the classifier ``head``'s
outputs (``ModelGroups.ignored``). The sliced model needs no extra bookkeeping: ``vit.Attention`` reads its head
count from ``qkv``'s rows, so ``ModelGroups.slice_model`` and ``loading.build_pruned_architecture`` give a model
that runs at its new head counts.

FLOPs: the two attention matmuls of a block (4 H T^2 d for T tokens) run in ``attn.dot_product``, a layer without
weights, so a per-layer FLOPs estimate that scales each layer by its kept weight fraction would not shrink them
with the heads. ``ViTGroups.flops_follow`` names, per such layer, the tensor whose kept fraction is exactly its
kept FLOPs fraction under a structured plan (``attn.proj.weight``: its kept columns are the kept heads' d each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..structure import ChannelGroup, GroupError, Member, ModelGroups

EMBEDDING_SKIPPED = ("patch_embed.proj", "the residual stream (embedding width): a bare nn.Parameter (cls_token, "
                                         "pos_embed) is coupled to these channels, which the adapter does not slice")


@dataclass
class ViTGroups(ModelGroups):
    """``ModelGroups`` of a Vision Transformer, plus ``flops_follow``: layer without weights -> the weight whose
    kept fraction under a structured plan is that layer's kept FLOPs fraction (module docstring)."""

    flops_follow: dict[str, str] = field(default_factory=dict)


def head_rows(heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, owners): every row of a fused [q | k | v] projection of ``heads`` heads of ``head_dim`` rows per
    third, and the head each belongs to, row p*heads*head_dim + h*head_dim + j -> h. Both (3 * heads * head_dim,)."""
    width = heads * head_dim
    rows = torch.arange(3 * width)
    return rows, (rows % width) // head_dim


def build_vit_groups(model: nn.Module) -> ViTGroups:
    """Attention-head and MLP-neuron groups of every block of a ``vit.VisionTransformer`` (module docstring), in
    block order (heads before MLP). Raises ``GroupError`` when a block's tensors do not split into whole heads."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise GroupError("Head and MLP groups need a Vision Transformer (blocks.i.attn.qkv ...).")
    groups, follow = [], {}
    for i, block in enumerate(blocks):
        base = f"blocks.{i}"
        attn, mlp = block.attn, block.mlp
        d = attn.head_dim
        rows = attn.qkv.weight.shape[0]
        if rows % (3 * d) or attn.proj.weight.shape[1] * 3 != rows:
            raise GroupError(f"{base}.attn: qkv has {rows} rows and proj {attn.proj.weight.shape[1]} inputs, not "
                             f"3 x and 1 x a whole number of heads of {d}")
        heads = rows // (3 * d)
        follow[f"{base}.attn.dot_product"] = f"{base}.attn.proj.weight"
        if heads >= 2:
            qkv_rows, owners = head_rows(heads, d)
            cols = torch.arange(heads * d)
            members = [Member(f"{base}.attn.qkv", "weight", 0, qkv_rows, owners),
                       Member(f"{base}.attn.qkv", "bias", 0, qkv_rows, owners),
                       Member(f"{base}.attn.proj", "weight", 1, cols, cols // d)]
            groups.append(ChannelGroup(f"{base}.attn.heads", heads, members, [f"{base}.attn.qkv"],
                                       [f"{base}.attn.proj"]))
        width = mlp.fc1.weight.shape[0]
        if width >= 2:
            idx = torch.arange(width)
            members = [Member(f"{base}.mlp.fc1", "weight", 0, idx, idx), Member(f"{base}.mlp.fc1", "bias", 0, idx, idx),
                       Member(f"{base}.mlp.fc2", "weight", 1, idx, idx)]
            groups.append(ChannelGroup(f"{base}.mlp.fc1", width, members, [f"{base}.mlp.fc1"], [f"{base}.mlp.fc2"]))
    if not groups:
        raise GroupError("This Vision Transformer has no prunable group left (one head and one MLP neuron per block).")
    return ViTGroups(groups, [EMBEDDING_SKIPPED], ["head"], follow)
