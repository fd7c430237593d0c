"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Sec. 3.1, Eq. 1-4):
a patch embedding (a conv of kernel = stride = patch size), a class token, learned position embeddings,
``depth`` pre-norm blocks (x + MSA(LN(x)), then x + MLP(LN(x)) with GELU), a final LayerNorm and a linear head
on the class token. The registered ``vit-tiny`` is DeiT-Tiny (Touvron et al. 2021, Table 1: width 192, 3 heads,
12 blocks, MLP 768, patch 16 at 224x224): 5,717,416 parameters at 1000 classes.

Module names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.norm1``, ``blocks.N.attn.qkv`` (one fused projection to queries, keys and values), ``blocks.N.attn.proj``,
``blocks.N.norm2``, ``blocks.N.mlp.fc1/fc2``, ``norm``, ``head``; LayerNorm eps 1e-6, exact GELU), so a timm
``vit_tiny_patch16_224`` state_dict has exactly our keys and shapes (checked against a hand-written list; timm
itself is not installed here). Prunable by channel groups: the MLP hidden neurons (``fc1`` rows with ``fc2``
columns). Not prunable here: attention heads (see ``FusedQKV``) and the embedding width (the residual stream is
tied to the bare ``cls_token``/``pos_embed`` parameters, which the adapter does not slice).
Input (N, 3, image, image) at the built resolution; output (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn


class FusedQKV(nn.Module):
    """The fused query/key/value projection, x W^T + b with W of shape (3 dim, dim) laid out [q | k | v] (timm's
    ``attn.qkv``). Deliberately not an ``nn.Linear``: Torch-Pruning's dependency graph follows a Linear's rows
    through the reshape into heads and the attention matmuls as if they were elementwise, couples rows of
    different heads and of q, k and v, and a model sliced that way no longer reshapes into heads (measured: the
    masked and sliced outputs of a group-l1 plan disagree). Torch-Pruning roots no group at a module type it
    does not know, so attention stays dense; the MLP neurons remain prunable."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.bias = nn.Parameter(torch.zeros(3 * dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    """Multi-head self-attention, Vaswani et al. 2017 Eq. 1: softmax(Q K^T / sqrt(d_head)) V per head, heads
    concatenated and projected by ``proj``. Input and output (N, tokens, dim)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = FusedQKV(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (b,h,n,d)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_tiny(num_classes: int = 1000) -> VisionTransformer:
    """DeiT-Tiny / timm ``vit_tiny_patch16_224``: 5,717,416 parameters at 1000 classes."""
    return VisionTransformer(224, 16, num_classes, 192, 12, 3, 768)
