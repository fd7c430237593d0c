"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Sec. 3.1, Eq. 1-4):
a patch embedding (a conv of kernel = stride = patch size), a class token, learned position embeddings,
``depth`` pre-norm blocks (x + MSA(LN(x)), then x + MLP(LN(x)) with GELU), a final LayerNorm and a linear head
on the class token. The registered ``vit-tiny`` is DeiT-Tiny (Touvron et al. 2021, Table 1: width 192, 3 heads,
12 blocks, MLP 768, patch 16 at 224x224): 5,717,416 parameters at 1000 classes.

Module names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.norm1``, ``blocks.N.attn.qkv`` (one fused projection to queries, keys and values), ``blocks.N.attn.proj``,
``blocks.N.norm2``, ``blocks.N.mlp.fc1/fc2``, ``norm``, ``head``; LayerNorm eps 1e-6, exact GELU), so a timm
``vit_tiny_patch16_224`` state_dict has exactly our keys and shapes (checked against a hand-written list; timm
itself is not installed here). One addition without tensors, ``blocks.N.attn.dot_product``, computes the attention
matmuls so that FLOP counters attribute them to a layer.

Prunable by channel groups that the model supplies itself (``channel_groups``, built in ``vit_groups``; no
Torch-Pruning trace): the attention heads of every block (a head's rows in the q, k and v thirds of ``qkv`` and its
columns of ``proj``; at least one head stays) and the MLP hidden neurons (``fc1`` rows with ``fc2`` columns).
The head count is read from ``qkv``'s rows, so a model with heads removed runs as it is and a pruned checkpoint
rebuilds (``loading.build_pruned_architecture``). Not prunable: the embedding width (the residual stream is tied to
the bare ``cls_token``/``pos_embed`` parameters, which the adapter does not slice) and the head dimension.
Input (N, 3, image, image) at the built resolution; output (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn


class FusedQKV(nn.Linear):
    """The fused query/key/value projection, x W^T + b with W of shape (3 H d, dim) laid out [q | k | v], each
    third holding H heads of d rows (timm's ``attn.qkv``; H d = dim in the dense model). A ``Linear`` (so slicing,
    rebuilding a pruned checkpoint, FLOPs counting and the criteria that read a Linear's output treat it as one)
    of its own type, initialised as timm does (truncated normal, std 0.02; zero bias). Its rows are grouped into
    heads by ``vit_groups.build_vit_groups``, never by Torch-Pruning's trace, which follows a Linear's rows through
    the reshape into heads and the attention matmuls as if they were elementwise (it couples rows of different
    heads and of q, k and v; ``structure.groups.probe_groups`` rejects such groups)."""

    def __init__(self, dim: int):
        super().__init__(dim, 3 * dim)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)


class ScaledDotProductAttention(nn.Module):
    """softmax(Q K^T * scale) V per head (Vaswani et al. 2017, Eq. 1; scale = d_head^-0.5): (N, H, T, d) queries,
    keys and values -> (N, H, T, d) contexts. A module without parameters (no state_dict entry) so that FLOP
    counters attribute the two attention matmuls, 4 H T^2 d FLOPs, to a layer of their own
    (``blocks.i.attn.dot_product``) instead of the Attention module whose children are counted separately."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention, Vaswani et al. 2017 Eq. 1: softmax(Q K^T / sqrt(d_head)) V per head, heads
    concatenated and projected by ``proj``. Input and output (N, tokens, dim).

    The head count is read from the tensors (``qkv`` rows / (3 ``head_dim``)), never stored: a model whose heads
    were removed (rows of ``qkv``, columns of ``proj``) runs as it is, with ``head_dim`` and the scale unchanged."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = FusedQKV(dim)
        self.dot_product = ScaledDotProductAttention(self.scale)
        self.proj = nn.Linear(dim, dim)

    @property
    def num_heads(self) -> int:
        return self.qkv.weight.shape[0] // (3 * self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, b, heads, n, d)
        q, k, v = qkv.unbind(0)
        return self.proj(self.dot_product(q, k, v).transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)


class VisionTransformer(nn.Module):
    def __init__(self, image: int = 224, patch: int = 16, num_classes: int = 1000, dim: int = 192, depth: int = 12,
                 heads: int = 3, mlp_hidden: int = 768, in_channels: int = 3):
        super().__init__()
        if image % patch or dim % heads:
            raise ValueError(f"image {image} must be a multiple of patch {patch}, dim {dim} of heads {heads}")
        self.patch_embed = PatchEmbed(patch, in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, (image // patch) ** 2 + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # (randn is slow to build on the meta device)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def channel_groups(self):
        """The structured groups of every block: its attention heads and its MLP neurons (``vit_groups``)."""
        from .vit_groups import build_vit_groups

        return build_vit_groups(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_tiny(num_classes: int = 1000) -> VisionTransformer:
    """DeiT-Tiny / timm ``vit_tiny_patch16_224``: 5,717,416 parameters at 1000 classes."""
    return VisionTransformer(224, 16, num_classes, 192, 12, 3, 768)
