"""Loading uploaded model files: every format round-trips, untrusted pickles never run, bad files get a clear
ModelLoadError (and never any other exception type)."""

import io
import random
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from pruning_core import Workbench, load_builtin, make_method
from pruning_core.data import DataSplits
from pruning_core.loading import ModelLoadError, build_pruned_architecture, load_builtin_model, load_model_file
from pruning_core.models import DigitsCNN

X = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _same_outputs(a, b):
    with torch.inference_mode():
        torch.testing.assert_close(a(X), b(X), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def cnn():
    return load_builtin("digits-cnn")


class _RunsCodeWhenUnpickled:
    """A pickle that creates ``path`` when loaded: the attack a pickled 'model' can carry."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_builtin_model_comes_with_its_input_shape():
    loaded = load_builtin_model("digits-resnet")
    assert (loaded.kind, loaded.architecture, loaded.input_shape) == ("builtin", "digits-resnet", (1, 8, 8))
    assert not loaded.model.training
    with pytest.raises(ModelLoadError, match="digits-cnn"):
        load_builtin_model("no-such-net")


def test_state_dict_loads_into_the_chosen_architecture(cnn):
    loaded = load_model_file(_torch_save(cnn.state_dict()), "cnn.pt", architecture="digits-cnn")
    assert (loaded.kind, loaded.architecture, loaded.input_shape) == ("state_dict", "digits-cnn", (1, 8, 8))
    _same_outputs(loaded.model, cnn)


def test_wrapped_dataparallel_checkpoint_is_unwrapped(cnn):
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in cnn.state_dict().items()}}
    loaded = load_model_file(_torch_save(wrapped), "checkpoint.pth", architecture="digits-cnn")
    _same_outputs(loaded.model, cnn)


def test_safetensors_is_detected_from_content_not_extension(cnn):
    loaded = load_model_file(save_safetensors(cnn.state_dict()), "weights.bin", architecture="digits-cnn")
    assert loaded.kind == "safetensors"
    _same_outputs(loaded.model, cnn)


def test_half_precision_weights_are_converted_with_a_note(cnn):
    half = {k: v.half() if v.is_floating_point() else v for k, v in cnn.state_dict().items()}
    loaded = load_model_file(save_safetensors(half), "half.safetensors", architecture="digits-cnn")
    assert any("float16" in n for n in loaded.notes)
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_weights_without_architecture_ask_for_one(cnn):
    with pytest.raises(ModelLoadError, match=r"Choose the architecture.*digits-mlp, digits-cnn, digits-resnet"):
        load_model_file(save_safetensors(cnn.state_dict()), "w.safetensors")


def test_wrong_architecture_names_missing_and_unexpected_keys(cnn):
    with pytest.raises(ModelLoadError) as e:
        load_model_file(_torch_save(cnn.state_dict()), "cnn.pt", architecture="digits-resnet")
    msg = str(e.value)
    assert "does not match the digits-resnet architecture" in msg
    assert "missing from the file" in msg and "layer1.conv1.weight" in msg
    assert "in the file but not in the model (conv2.weight" in msg


def test_wider_layers_are_reported_with_both_shapes():
    wide = DigitsCNN(widths=(32, 64)).state_dict()
    with pytest.raises(ModelLoadError, match=r"of a different shape \(conv1\.weight: file 32x1x3x3, model 16x1x3x3"):
        load_model_file(_torch_save(wide), "wide.pt", architecture="digits-cnn")


def test_nan_weights_are_rejected_naming_the_tensor(cnn):
    sd = {k: v.clone() for k, v in cnn.state_dict().items()}
    sd["fc1.weight"][0, :3] = float("nan")
    with pytest.raises(ModelLoadError, match=r"'fc1\.weight' contains 3 NaN or infinite values"):
        load_model_file(_torch_save(sd), "nan.pt", architecture="digits-cnn")


def test_integer_tensor_where_float_is_expected_is_rejected(cnn):
    sd = dict(cnn.state_dict())
    sd["conv1.weight"] = sd["conv1.weight"].round().long()
    with pytest.raises(ModelLoadError, match=r"'conv1\.weight' holds int64 values .* floating point"):
        load_model_file(_torch_save(sd), "int.pt", architecture="digits-cnn")


def test_pickled_module_is_refused_without_trust_and_loaded_with_it(cnn):
    data = _torch_save(cnn)
    with pytest.raises(ModelLoadError, match=r"pickled Python object \(pruning_core\.models\.digits\.DigitsCNN\), "
                                             r"which can run code.*'I trust this file'"):
        load_model_file(data, "whole.pt")
    loaded = load_model_file(data, "whole.pt", trust_pickle=True)
    assert (loaded.kind, loaded.architecture, loaded.input_shape) == ("pickled-module", "digits-cnn", (1, 8, 8))
    _same_outputs(loaded.model, cnn)


def test_untrusted_pickle_never_runs(tmp_path):
    flag = tmp_path / "pwned"
    with pytest.raises(ModelLoadError, match="can run code"):
        load_model_file(_torch_save(_RunsCodeWhenUnpickled(flag)), "evil.pt")
    assert not flag.exists()


def test_trusted_pickle_that_is_not_a_model_is_rejected():
    from fractions import Fraction

    with pytest.raises(ModelLoadError, match="unpickled to a Fraction, not a PyTorch model"):
        load_model_file(_torch_save(Fraction(1, 3)), "x.pt", trust_pickle=True)


def test_torchscript_round_trip_notes_structured_methods_unavailable(cnn):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(cnn, X[:2]), buf)
    loaded = load_model_file(buf.getvalue(), "model.ts", architecture="digits-cnn")
    assert loaded.kind == "torchscript" and loaded.input_shape == (1, 8, 8)
    assert any("structured" in n for n in loaded.notes)
    _same_outputs(loaded.model, cnn)


def _pt2(model, example) -> bytes:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (example,)), buf)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # torch deep-copying its own tree specs
def test_exported_program_with_fixed_batch_still_evaluates_any_batch(cnn, digits):
    loaded = load_model_file(_pt2(cnn, X[:1]), "model.pt2")
    assert (loaded.kind, loaded.input_shape) == ("exported", (1, 8, 8))
    assert any("fixed batch of 1" in n for n in loaded.notes)
    _same_outputs(loaded.model, cnn)  # 7 samples through a batch-1 program
    few = DataSplits("digits, 64 samples", digits.train.head(64), digits.calib.head(64), digits.eval.head(64), 10)
    wb = Workbench(loaded.model, few, device="cpu")  # eval() and deep copy work on the wrapper
    assert wb.dense_metrics().accuracy > 0.9


def test_exported_program_with_pickle_payload_is_refused(cnn, tmp_path):
    flag = tmp_path / "pwned"
    # torch.export.load unpickles sample inputs with weights_only=False when the safe load fails
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_pt2(cnn, X[:1]))) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            payload = zin.read(info)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                payload = _torch_save(_RunsCodeWhenUnpickled(flag))
            zout.writestr(info.filename, payload)
    with pytest.raises(ModelLoadError, match=r"evil\.pt2: its sample inputs are not plain tensors \(io\.open\).*"
                                             r"can run code"):
        load_model_file(out.getvalue(), "evil.pt2")
    assert not flag.exists()


def test_pruned_state_dict_is_rebuilt_at_its_own_widths(demo_workbenches):
    wb = demo_workbenches["digits-resnet"]
    plan = make_method("group-l1").prepare(wb).plan(0.5)
    small = wb.sliced_model(plan, share_untouched=False)
    sd = small.state_dict()
    model = build_pruned_architecture("digits-resnet", sd)
    assert model.layer2.conv1.out_channels == sd["layer2.conv1.weight"].shape[0] < 32
    assert model.bn1.num_features == sd["bn1.weight"].shape[0]
    assert sum(p.numel() for p in model.parameters()) < wb.dense_params
    _same_outputs(model, small)
    loaded = load_model_file(save_safetensors(sd), "pruned.safetensors", architecture="digits-resnet")
    assert any("Pruned checkpoint" in n for n in loaded.notes)
    _same_outputs(loaded.model, small)


def test_pruned_architecture_refuses_wider_layers():
    with pytest.raises(ModelLoadError, match="can only have narrower"):
        build_pruned_architecture("digits-cnn", DigitsCNN(widths=(32, 64)).state_dict())


@pytest.mark.parametrize("data, filename, message", [
    (b"", "empty.pt", "is empty"),
    (bytes(random.Random(0).randbytes(4096)), "noise.pt", "not a model file this app recognises"),
    (b"ONNX-ish bytes", "model.onnx", "ONNX files cannot be pruned here"),
])
def test_unrecognised_bytes_get_a_clear_message(data, filename, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model_file(data, filename)


def test_zip_that_is_not_a_model_lists_what_it_holds():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(ModelLoadError, match=r"zip archive, but not a PyTorch model \(it contains notes\.txt\)"):
        load_model_file(buf.getvalue(), "model.zip")


def test_npz_uploaded_as_model_is_redirected_to_data():
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((2, 3)), y=np.zeros(2))
    with pytest.raises(ModelLoadError, match="Upload it as the dataset"):
        load_model_file(buf.getvalue(), "data.npz")


def test_truncated_checkpoint_says_it_is_incomplete(cnn):
    data = _torch_save(cnn.state_dict())
    with pytest.raises(ModelLoadError, match="damaged or incomplete"):
        load_model_file(data[: len(data) // 2], "cut.pt", architecture="digits-cnn")


def test_damaged_files_only_ever_raise_model_load_error(cnn):
    """Truncations and byte flips of every format: each loads or raises ModelLoadError, nothing else."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(cnn, X[:2]), buf)
    originals = [_torch_save(cnn.state_dict()), save_safetensors(cnn.state_dict()), buf.getvalue()]
    rng = random.Random(0)
    for data in originals:
        for _ in range(8):
            cut = data[: rng.randrange(1, len(data))]
            flipped = bytearray(data)
            for i in rng.sample(range(len(data)), 16):
                flipped[i] ^= 0xFF
            for damaged in (cut, bytes(flipped)):
                try:
                    load_model_file(damaged, "damaged.pt", architecture="digits-cnn")
                except ModelLoadError as e:
                    assert str(e).startswith("damaged.pt")
