"""Structured groups of a BERT encoder, built from its known layout (no tracing): attention heads and FFN neurons.

Per encoder layer i (Michel et al., "Are Sixteen Heads Really Better than One?", NeurIPS 2019, for heads;
the FFN's hidden neurons as in e.g. Kwon et al., "A Fast Post-Training Pruning Framework for Transformers",
NeurIPS 2022):

* ``encoder.layer.i.attention.heads`` (one channel per head, ``num_attention_heads`` channels): head h spans rows
  h*d .. h*d+d-1 (d = ``attention_head_size``) of the query, key and value weights and biases (dim 0) and the same
  columns of ``attention.output.dense.weight`` (dim 1). Zeroing them makes the head's context zero, so the
  masked layer computes exactly what the layer without that head computes.
* ``encoder.layer.i.ffn`` (``intermediate_size`` channels): row j of ``intermediate.dense`` (weight and bias,
  dim 0) and column j of ``output.dense.weight`` (dim 1); GELU(0) = 0, so masking equals removal.

``EncoderGroups`` is a ``ModelGroups`` whose ``slice_model`` also brings the attention modules' head counts and the
model's config in line with the sliced tensors, the way ``transformers``' own ``prune_heads`` records them:
``num_attention_heads`` and ``all_head_size`` shrink, ``attention_head_size`` stays, and the removed heads (in the
dense model's numbering) go into ``config.pruned_heads``, from which ``from_pretrained`` rebuilds the same shapes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..plan import Plan, check_ratio
from ..structure import ChannelGroup, GroupError, Member, ModelGroups

IMPORTANCES = ("l1", "l2")


def _bert(model: nn.Module) -> nn.Module:
    bert = getattr(model, "bert", model)
    if not (hasattr(bert, "encoder") and hasattr(bert.encoder, "layer") and hasattr(bert, "config")):
        raise GroupError("Head and FFN groups need a BERT-style encoder (encoder.layer.i.attention.self ...).")
    return bert


def _prefix(model: nn.Module) -> str:
    return "bert." if getattr(model, "bert", None) is not None else ""


def _dense_heads(attention: nn.Module, n_heads: int) -> list[int]:
    """The dense model's numbers of the heads a (possibly already pruned) attention module still has."""
    gone = set(getattr(attention, "pruned_heads", set()))
    return [h for h in range(n_heads + len(gone)) if h not in gone]


class EncoderGroups(ModelGroups):
    """``ModelGroups`` of a BERT encoder; ``slice_model`` also fixes head counts and the config (module doc)."""

    def slice_model(self, model: nn.Module, pruned: dict[str, torch.Tensor], share_untouched: bool = True
                    ) -> nn.Module:
        small = super().slice_model(model, pruned, share_untouched)
        bert, prefix = _bert(small), _prefix(small)
        old = bert.config
        config = copy.deepcopy(old)
        for mod in small.modules():  # the copied tree still shares the dense model's config object
            if getattr(mod, "config", None) is old:
                mod.config = config
        pruned_heads = {int(k): sorted(v) for k, v in (config.pruned_heads or {}).items()}
        widths = set()
        for i, layer in enumerate(bert.encoder.layer):
            attention, self_attn = layer.attention, layer.attention.self
            name = f"{prefix}encoder.layer.{i}.attention.heads"
            before = _dense_heads(attention, self_attn.num_attention_heads)
            removed = sorted({before[int(h)] for h in pruned.get(name, torch.empty(0, dtype=torch.long))})
            kept = self_attn.query.weight.shape[0] // self_attn.attention_head_size
            self_attn.num_attention_heads = kept
            self_attn.all_head_size = kept * self_attn.attention_head_size
            attention.pruned_heads = set(attention.pruned_heads) | set(removed)
            if attention.pruned_heads:
                pruned_heads[i] = sorted(attention.pruned_heads)
            widths.add(layer.intermediate.dense.out_features)
        config.pruned_heads = pruned_heads
        if len(widths) == 1:
            config.intermediate_size = widths.pop()
        else:  # BertConfig has one FFN width; record each layer's so a reader can rebuild them
            config.intermediate_sizes = [layer.intermediate.dense.out_features for layer in bert.encoder.layer]
        return small


def build_encoder_groups(model: nn.Module) -> EncoderGroups:
    """Attention-head and FFN-neuron groups of every layer of a BERT encoder (``model`` is a ``BertModel`` or a
    module holding one as ``.bert``, e.g. ``SentenceEncoder``), named by the model's own module paths."""
    bert, prefix = _bert(model), _prefix(model)
    groups = []
    for i, layer in enumerate(bert.encoder.layer):
        base = f"{prefix}encoder.layer.{i}"
        self_attn = layer.attention.self
        n_heads, d = self_attn.num_attention_heads, self_attn.attention_head_size
        if self_attn.query.weight.shape[0] != n_heads * d:
            raise GroupError(f"{base}: query has {self_attn.query.weight.shape[0]} rows, not {n_heads} heads of {d}")
        if getattr(self_attn, "position_embedding_type", "absolute") != "absolute":
            raise GroupError(f"{base}: relative position embeddings are not supported by head pruning")
        rows, heads = torch.arange(n_heads * d), torch.arange(n_heads).repeat_interleave(d)
        members = []
        for proj in ("query", "key", "value"):
            members += [Member(f"{base}.attention.self.{proj}", "weight", 0, rows, heads),
                        Member(f"{base}.attention.self.{proj}", "bias", 0, rows, heads)]
        members.append(Member(f"{base}.attention.output.dense", "weight", 1, rows, heads))
        if n_heads >= 2:
            groups.append(ChannelGroup(f"{base}.attention.heads", n_heads, members,
                                       [f"{base}.attention.self.{p}" for p in ("query", "key", "value")],
                                       [f"{base}.attention.output.dense"]))
        width = layer.intermediate.dense.out_features
        idx = torch.arange(width)
        ffn = [Member(f"{base}.intermediate.dense", "weight", 0, idx, idx),
               Member(f"{base}.intermediate.dense", "bias", 0, idx, idx),
               Member(f"{base}.output.dense", "weight", 1, idx, idx)]
        groups.append(ChannelGroup(f"{base}.ffn", width, ffn, [f"{base}.intermediate.dense"],
                                   [f"{base}.output.dense"]))
    return EncoderGroups(groups)


def encoder_channel_scores(model: nn.Module, groups: ModelGroups, importance: str = "l1"
                           ) -> dict[str, torch.Tensor]:
    """Group magnitude (DepGraph, Fang et al., CVPR 2023, Sec. 3.3) of every head and FFN neuron:

        I(c) = sum over the group's weight tensors W of || W[slice of c] ||_p        (p = 1 for "l1", 2 for "l2")

    a head's slices being its 32 query, key and value rows and its 32 output columns, an FFN neuron's its
    intermediate row and output column. Biases are left out, as in ``importance.group_channel_norms``.
    Returns group name -> (channels,) float64 on the CPU."""
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    p = 1 if importance == "l1" else 2
    params = dict(model.named_parameters())
    out = {}
    for g in groups.groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        for w, m in g.importance_tensors(params):
            per_target = w.detach().movedim(m.dim, 0)[m.target_idx].to("cpu", torch.float64).abs()
            per_target = per_target.pow(p).reshape(len(m.target_idx), -1).sum(1)
            score += torch.zeros(g.size, dtype=torch.float64).index_add_(0, m.root_idx, per_target).pow(1.0 / p)
        out[g.name] = score
    return out


def encoder_plan(model: nn.Module, groups: ModelGroups, head_ratio: float, ffn_ratio: float,
                 importance: str = "l1") -> Plan:
    """A structured plan removing, in every layer, the ``round(head_ratio * heads)`` attention heads and the
    ``round(ffn_ratio * neurons)`` FFN neurons of lowest group magnitude (``encoder_channel_scores``; ties by
    index, at least one channel kept per group). The same count per layer keeps one head count and one FFN width
    for the whole model, so the pruned model's config stays a plain ``BertConfig`` (plus ``pruned_heads``)."""
    head_ratio, ffn_ratio = check_ratio(head_ratio), check_ratio(ffn_ratio)
    scores = encoder_channel_scores(model, groups, importance)
    pruned = {}
    for g in groups.groups:
        ratio = head_ratio if g.name.endswith(".heads") else ffn_ratio
        n = min(round(ratio * g.size), g.size - 1)
        order = torch.sort(scores[g.name], stable=True).indices
        pruned[g.name] = torch.sort(order[:n]).values
    return Plan(f"encoder-{importance}", max(head_ratio, ffn_ratio), "structured", pruned_channels=pruned,
                details={"head_ratio": head_ratio, "ffn_ratio": ffn_ratio, "importance": importance})
