"""A corpus of broken and hostile model and data files, generated (never committed as binaries).

``build_corpus(folder, marker_dir)`` writes every file under ``folder`` and returns the cases: what to load, how,
and what must happen. Payloads that would run code create a file in ``marker_dir`` named after their case;
``controls`` are the same payloads opened the unsafe way (plain ``torch.load(weights_only=False)``,
``torch.export.load``, ``pickle.loads``), which must create their marker: proof that each payload is live, so
that "no marker appeared" means something.

Expectations: ``expect="error"`` with ``match`` (a regex the message must contain), or ``expect="loads"``.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from pruning_core import load_builtin
from pruning_core.sparse_format import save_sparse_state_dict


@dataclass
class Case:
    id: str
    kind: str  # "model" (load_model_file) or "data" (load_npz) or "control" (an unsafe reader, see below)
    filename: str
    path: str = ""
    architecture: str | None = None
    trust: bool = False
    expect: str = "error"  # "error" (our own error type) or "loads"
    match: str = ""
    env: dict = field(default_factory=dict)
    reader: str = ""  # controls: "torch.load", "torch.export.load", "pickle.loads"
    max_peak_mb: int = 400  # peak resident memory above the worker's baseline


class _Payload:
    """Unpickling this creates the marker file: what a hostile pickle does, harmlessly."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tsave(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _rezip(base: bytes, replace: dict | None = None, drop: tuple = (), add: list | None = None,
           deflate: tuple = ()) -> bytes:
    """Copy a zip, replacing, dropping and adding entries (``add`` may repeat names: duplicates)."""
    replace, out = replace or {}, io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = replace.get(info.filename, zin.read(info))
            kind = zipfile.ZIP_DEFLATED if info.filename in deflate else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=kind)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are the point of some cases
            for name, data in add or []:
                kind = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
                zout.writestr(name, data, compress_type=kind)
    return out.getvalue()


def _zip(entries: list[tuple[str, bytes]], deflate: bool = False) -> bytes:
    return _rezip(_zip_empty(), add=entries, deflate=tuple(n for n, _ in entries) if deflate else ())


def _zip_empty() -> bytes:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    return buf.getvalue()


def _pt2(model, example) -> bytes:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), buf)
    return buf.getvalue()


def _torchscript(model, example) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), buf)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_header_only(shape, dtype="<f8", extra: bytes = b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + extra


def _safetensors_raw(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _sparse_with_shapes(shapes: dict, tensors: dict) -> bytes:
    from pruning_core.sparse_format import SPARSE_FORMAT

    return save_safetensors(tensors, metadata={"format": SPARSE_FORMAT, "shapes": json.dumps(shapes)})


def _expanded_state_dict(n: int) -> dict:
    """A state_dict of digits-mlp whose fc1.weight is replaced by a stride-0 view of one number, n x n."""
    sd = dict(load_builtin("digits-mlp").state_dict())
    sd["fc1.weight"] = torch.ones(1).expand(n, n)
    return sd


def build_corpus(folder: Path, marker_dir: Path, control_dir: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(case: Case, data: bytes) -> None:
        path = folder / case.id
        path.write_bytes(data)
        case.path = str(path)
        cases.append(case)

    def evil(case_id: str, control: bool = False) -> _Payload:
        return _Payload(str((control_dir if control else marker_dir) / case_id))

    mlp, cnn = load_builtin("digits-mlp"), load_builtin("digits-cnn")
    x = torch.zeros(2, 1, 8, 8)
    mlp_sd = {k: v.clone() for k, v in mlp.state_dict().items()}
    good_pt2, good_ts = _pt2(mlp, x), _torchscript(cnn, x)
    refused_pickle = r"pickled Python object|can run code"

    # --- pickles under every extension, in torch.save's zip format ------------------------------------------
    for ext in ("pt", "pth", "bin", "ckpt", "safetensors", "pt2", "npz", "onnx", "zip", "pkl", "pt.tar"):
        cid = f"pickle-zip.{ext}"
        add(Case(cid, "model", f"model.{ext}", match=refused_pickle), _tsave(evil(cid)))
    add(Case("control-pickle-zip", "control", "x.pt", reader="torch.load"), _tsave(evil("control-pickle-zip", True)))
    add(Case("pickle-in-dict.pt", "model", "ckpt.pt", architecture="digits-mlp", match=refused_pickle),
        _tsave({"state_dict": mlp_sd, "optimizer": evil("pickle-in-dict.pt")}))
    from fractions import Fraction

    add(Case("pickle-trusted-not-a-module.pt", "model", "x.pt", trust=True, match="unpickled to a Fraction"),
        _tsave(Fraction(1, 3)))
    # --- raw pickles and the legacy format (a pickle-protocol byte first) -----------------------------------
    for proto in (2, 3, 4, 5):
        cid = f"raw-pickle-p{proto}.pt"
        add(Case(cid, "model", "model.pt", match="raw Python pickle or a checkpoint in PyTorch's legacy format"),
            pickle.dumps(evil(cid), protocol=proto))
    add(Case("control-raw-pickle", "control", "x.pkl", reader="pickle.loads"),
        pickle.dumps(evil("control-raw-pickle", True), protocol=4))
    add(Case("raw-pickle-p0.pt", "model", "model.pt", match="not a model file this app recognises"),
        pickle.dumps(evil("raw-pickle-p0.pt"), protocol=0))
    add(Case("legacy-state-dict.pt", "model", "old.pt", architecture="digits-mlp", match="legacy format"),
        _tsave(mlp_sd, legacy=True))
    legacy = _tsave({"w": torch.ones(4)}, legacy=True)
    add(Case("legacy-huge-storage.pt", "model", "old.pt", architecture="digits-mlp", match="legacy format"),
        legacy.replace(b"cpuq\x06K\x04N", b"cpuq\x06J" + struct.pack("<i", 2 * 10**9) + b"N", 1))

    # --- torch.export (.pt2) ----------------------------------------------------------------------------------
    with zipfile.ZipFile(io.BytesIO(good_pt2)) as z:
        graph = z.read("archive/models/model.json")
    harmless = _tsave({})

    def old_layout(evil_entry: str, cid: str, hide: bool = True, control: bool = False) -> bytes:
        return pt2_old_layout(graph, evil_entry, evil(cid, control), hide)

    add(Case("pt2-issue-exploit.pt2", "model", "model.pt2", match="unexpected name|top-level folder"),
        old_layout("serialized_constants.pt", "pt2-issue-exploit.pt2"))
    add(Case("control-pt2-exploit", "control", "model.pt2", reader="torch.export.load"),
        old_layout("serialized_constants.pt", "control-pt2-exploit", control=True))
    for entry in ("serialized_state_dict.pt", "serialized_example_inputs.pt"):
        cid = f"pt2-old-layout-{entry.split('_')[1]}.pt2"
        add(Case(cid, "model", "model.pt2", match="unexpected name|top-level folder"), old_layout(entry, cid))
    add(Case("pt2-old-layout-unhidden.pt2", "model", "model.pt2", match="unexpected name|top-level folder"),
        old_layout("serialized_constants.pt", "pt2-old-layout-unhidden.pt2", hide=False))
    add(Case("pt2-old-layout-no-format.pt2", "model", "model.pt2", match="not a PyTorch model|unexpected name"),
        _zip([("version", b"8.20"), ("serialized_exported_program.json", graph),
              ("serialized_constants.pt", _tsave(evil("pt2-old-layout-no-format.pt2")))]))
    cid = "pt2-sample-inputs-pickle.pt2"
    add(Case(cid, "model", "model.pt2", match=r"sample inputs are not plain tensors \(io\.open\)"),
        _rezip(good_pt2, {"archive/data/sample_inputs/model.pt": _tsave(evil(cid))}))
    cid = "pt2-pickled-weight.pt2"
    with zipfile.ZipFile(io.BytesIO(good_pt2)) as z:
        wcfg = json.loads(z.read("archive/data/weights/model_weights_config.json"))
    first = next(iter(wcfg["config"]))
    wcfg["config"][first]["use_pickle"] = True
    add(Case(cid, "model", "model.pt2", match="pickled Python object"),
        _rezip(good_pt2, {"archive/data/weights/model_weights_config.json": json.dumps(wcfg).encode(),
                          f"archive/data/weights/{wcfg['config'][first]['path_name']}": _tsave(evil(cid))}))
    for prefix in ("custom_obj_", "opaque_obj_"):
        cid = f"pt2-{prefix.rstrip('_')}.pt2"
        ccfg = {"config": {"c": {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}}}
        add(Case(cid, "model", "model.pt2", match="never writes|pickled Python object"),
            _rezip(good_pt2, {"archive/data/constants/model_constants_config.json": json.dumps(ccfg).encode()},
                   add=[(f"archive/data/constants/{prefix}0", pickle.dumps(evil(cid)))]))
    cid = "pt2-legacy-weights-file.pt2"
    add(Case(cid, "model", "model.pt2", match="never writes"),
        _rezip(good_pt2, add=[("archive/data/weights/model.pt", _tsave(evil(cid)))]))
    add(Case("pt2-aotinductor-library.pt2", "model", "model.pt2", match="never writes"),
        _rezip(good_pt2, add=[("archive/data/aotinductor/model/model.so", b"\x7fELF" + b"\0" * 64)]))
    cid = "pt2-duplicate-entry.pt2"
    add(Case(cid, "model", "model.pt2", match="two entries named"),
        _rezip(good_pt2, add=[("archive/data/sample_inputs/model.pt", _tsave(evil(cid)))]))
    cid = "pt2-second-folder.pt2"
    add(Case(cid, "model", "model.pt2", match="top-level folders"),
        _rezip(good_pt2, add=[("zz/data/sample_inputs/model.pt", _tsave(evil(cid)))]))
    add(Case("pt2-path-traversal.pt2", "model", "model.pt2", match="unexpected name"),
        _rezip(good_pt2, add=[("archive/../../tmp/evil.pt", harmless)]))
    add(Case("pt2-absolute-name.pt2", "model", "model.pt2", match="unexpected name"),
        _rezip(good_pt2, add=[("/archive/evil.pt", harmless)]))
    add(Case("pt2-backslash-name.pt2", "model", "model.pt2", match="unexpected name"),
        _rezip(good_pt2, add=[("archive\\data\\evil.pt", harmless)]))
    for cid, old, new in (
            ("pt2-target-os-system.pt2", b"torch.ops.aten.relu.default", b"os.system"),
            ("pt2-target-builtins-eval.pt2", b"torch.ops.aten.relu.default", b"builtins.eval"),
            ("pt2-target-torch-load.pt2", b"torch.ops.aten.relu.default", b"torch.load"),
            ("pt2-target-from-file.pt2", b"torch.ops.aten.relu.default", b"torch.ops.aten.from_file.default"),
            ("pt2-sympy-eval.pt2", b"Symbol('s77', positive=True, integer=True)",
             b"__import__('os').system('touch /tmp/x') + Symbol('s77')")):
        add(Case(cid, "model", "model.pt2", match="outside torch's operators"),
            _rezip(good_pt2, {"archive/models/model.json": graph.replace(old, new)}))
    for cid, meta_patch, payload in (
            ("pt2-expanded-weight.pt2", {"sizes": [{"as_int": 20000}, {"as_int": 20000}],
                                         "strides": [{"as_int": 0}, {"as_int": 0}]}, b"\0" * 4),
            ("pt2-empty-file-huge-shape.pt2", {"sizes": [{"as_int": 20000}, {"as_int": 20000}],
                                               "strides": [{"as_int": 20000}, {"as_int": 1}]}, b""),
            ("pt2-out-of-bounds-view.pt2", {"storage_offset": {"as_int": 10**6}}, None)):
        cfg = json.loads(json.dumps(wcfg))
        cfg["config"][first]["use_pickle"] = False
        cfg["config"][first]["tensor_meta"].update(meta_patch)
        repl = {"archive/data/weights/model_weights_config.json": json.dumps(cfg).encode()}
        if payload is not None:
            repl[f"archive/data/weights/{cfg['config'][first]['path_name']}"] = payload
        add(Case(cid, "model", "model.pt2", match="declares a .* tensor but its file holds|expanded"),
            _rezip(good_pt2, repl))
    add(Case("pt2-compressed-entry.pt2", "model", "model.pt2", match="compressed"),
        _rezip(good_pt2, deflate=("archive/data/weights/weight_0",)))
    add(Case("pt2-wrong-archive-version.pt2", "model", "model.pt2", match="version"),
        _rezip(good_pt2, {"archive/archive_version": b"99"}))
    add(Case("pt2-truncated.pt2", "model", "model.pt2", match="damaged|incomplete"), good_pt2[: len(good_pt2) // 2])
    add(Case("pt2-good.pt2", "model", "model.pt2", expect="loads"), good_pt2)

    # --- TorchScript --------------------------------------------------------------------------------------------
    with zipfile.ZipFile(io.BytesIO(good_ts)) as z:
        ts_names = z.namelist()
        # the file holding the traced model's forward (its path follows the class' module, which varies)
        code_name = next(n for n in ts_names if n.endswith(".py") and b"DigitsCNN" in z.read(n))
        code = z.read(code_name)
    add(Case("ts-good.pt", "model", "model.ts", architecture="digits-cnn", expect="loads"), good_ts)
    for entry in ("data.pkl", "constants.pkl"):
        cid = f"ts-python-pickle-{entry.split('.')[0]}.pt"
        add(Case(cid, "model", "model.pt", match="damaged|not opened|could not be loaded"),
            _rezip(good_ts, {f"archive/{entry}": pickle.dumps(evil(cid), protocol=2)}))
    add(Case("ts-from-file.pt", "model", "model.pt", match="from_file"),
        _rezip(good_ts, {code_name: code.replace(
            b"return ", b"_evil = torch.from_file('/etc/passwd', True, 64)\n    return ", 1)}))
    add(Case("ts-custom-op.pt", "model", "model.pt", match="custom operators|ops\\."),
        _rezip(good_ts, {code_name: code + b"\n# ops.myns.run(x)\n"}))
    add(Case("ts-second-folder.pt", "model", "model.pt", match="top-level folders"),
        _rezip(good_ts, add=[("other/data.pkl", b"\x80\x02N.")]))
    add(Case("ts-duplicate.pt", "model", "model.pt", match="two entries named"),
        _rezip(good_ts, add=[("archive/constants.pkl", b"\x80\x02N.")]))
    add(Case("ts-unknown-entry.pt", "model", "model.pt", match="never writes"),
        _rezip(good_ts, add=[("archive/lib/evil.so", b"\x7fELF")]))
    add(Case("ts-code-bomb.pt", "model", "model.pt", match="far more data|limit|far larger", max_peak_mb=400),
        _rezip(good_ts, add=[("archive/code/__torch__/bomb.py", b" " * (100 << 20))],
               deflate=("archive/code/__torch__/bomb.py",)))

    # --- safetensors and our sparse format ------------------------------------------------------------------
    good_st = save_safetensors(mlp_sd)
    add(Case("st-good.safetensors", "model", "w.safetensors", architecture="digits-mlp", expect="loads"), good_st)
    add(Case("st-truncated.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="damaged|not a model file"), good_st[: len(good_st) // 2])
    add(Case("st-header-length-lies.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="header declares 1,000,000,000,000,000 bytes"), struct.pack("<Q", 10**15) + b"{}" + b"\0" * 64)
    add(Case("st-header-not-json.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="damaged"), struct.pack("<Q", 10) + b"{not json}" + b"\0" * 8)
    add(Case("st-offsets-beyond.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="damaged"),
        _safetensors_raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 10**9]}}, b"\0" * 16))
    add(Case("st-shape-bomb.safetensors", "model", "w.safetensors", architecture="digits-mlp", match="damaged"),
        _safetensors_raw({"w": {"dtype": "F32", "shape": [20000, 20000], "data_offsets": [0, 16]}}, b"\0" * 16))
    add(Case("st-unknown-dtype.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="damaged"),
        _safetensors_raw({"w": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16))
    mask = torch.from_numpy(np.packbits(np.ones(16, dtype=bool)))
    add(Case("sparse-issue-bomb.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="declares shape 20000x20000"),
        _sparse_with_shapes({"fc1.weight": [20000, 20000]},
                            {"fc1.weight::kept_mask": mask, "fc1.weight::kept_values": torch.ones(16)}))
    add(Case("sparse-count-mismatch.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="keeps 16 values but the file stores 3"),
        _sparse_with_shapes({"fc1.weight": [4, 4]},
                            {"fc1.weight::kept_mask": mask, "fc1.weight::kept_values": torch.ones(3)}))
    add(Case("sparse-shapes-garbage.safetensors", "model", "w.safetensors", architecture="digits-mlp",
             match="malformed"),
        _sparse_with_shapes({"fc1.weight": "20000"}, {"x": torch.ones(1)}))
    keep = {k: torch.rand(v.shape) > 0.5 for k, v in mlp_sd.items() if k.endswith("weight")}
    add(Case("sparse-good.safetensors", "model", "w.safetensors", architecture="digits-mlp", expect="loads"),
        save_sparse_state_dict({k: v * keep[k] if k in keep else v for k, v in mlp_sd.items()}, keep))

    # --- state_dict tensors ---------------------------------------------------------------------------------------
    add(Case("sd-good.pt", "model", "w.pt", architecture="digits-mlp", expect="loads"), _tsave(mlp_sd))
    for n in (20000, 50000):
        add(Case(f"sd-expanded-{n}.pt", "model", "w.pt", architecture="digits-mlp",
                 match="expanded or overlapping view"), _tsave(_expanded_state_dict(n)))
    bad = _tsave({"w": torch.ones(4)})
    with zipfile.ZipFile(io.BytesIO(bad)) as z:
        pk = z.read("archive/data.pkl")
    add(Case("sd-storage-size-lies.pt", "model", "w.pt", architecture="digits-mlp", match="damaged|incomplete"),
        _rezip(bad, {"archive/data.pkl": pk.replace(b"cpuq\x06K\x04t", b"cpuq\x06J" + struct.pack("<i", 10**9)
                                                    + b"t")}))
    for cid, change, match in (
            ("sd-nan.pt", lambda sd: sd["fc1.weight"].__setitem__((0, 0), float("nan")), "NaN or infinite"),
            ("sd-inf.pt", lambda sd: sd["fc2.bias"].__setitem__(0, float("inf")), "NaN or infinite"),
            ("sd-float64-overflow.pt", lambda sd: sd.__setitem__("fc3.bias", torch.full((10,), 1e39,
                                                                                      dtype=torch.float64)),
             "NaN or infinite"),
            ("sd-int-weights.pt", lambda sd: sd.__setitem__("fc1.weight", sd["fc1.weight"].long()),
             "floating point"),
            ("sd-wrong-shape.pt", lambda sd: sd.__setitem__("fc3.weight", torch.zeros(10, 65)), "different shape"),
            ("sd-missing-key.pt", lambda sd: sd.pop("fc3.bias"), "missing from the file"),
            ("sd-extra-key.pt", lambda sd: sd.__setitem__("evil.weight", torch.zeros(3)), "not in the model"),
            ("sd-not-tensors.pt", lambda sd: sd.__setitem__("epoch", 3), "not tensors"),
            ("sd-empty-layer.pt", lambda sd: (sd.__setitem__("fc1.weight", torch.zeros(0, 64)),
                                              sd.__setitem__("fc1.bias", torch.zeros(0)),
                                              sd.__setitem__("fc2.weight", torch.zeros(64, 0))), "no channels left"),
            ("sd-sparse-tensor.pt", lambda sd: sd.__setitem__("fc1.weight", sd["fc1.weight"].to_sparse()),
             "sparse_coo"),
            ("sd-huge-wider.pt", lambda sd: sd.__setitem__("fc1.weight", torch.zeros(512, 64)), "different shape")):
        sd = {k: v.clone() for k, v in mlp_sd.items()}
        change(sd)
        add(Case(cid, "model", "w.pt", architecture="digits-mlp", match=match), _tsave(sd))
    add(Case("sd-empty-dict.pt", "model", "w.pt", architecture="digits-mlp", match="empty dict"), _tsave({}))
    add(Case("sd-list.pt", "model", "w.pt", architecture="digits-mlp", match="not a state_dict"), _tsave([1, 2]))
    deep: object = {}
    for _ in range(50):
        deep = {"a": deep, "b": deep}
    add(Case("sd-shared-nesting.pt", "model", "w.pt", architecture="digits-mlp", match="not tensors"),
        _tsave(deep))

    # --- zip bombs and plain junk ------------------------------------------------------------------------------------
    add(Case("zip-bomb-storage.pt", "model", "w.pt", architecture="digits-mlp", match="far more data|limit"),
        _rezip(_tsave({"w": torch.zeros(100 << 20, dtype=torch.uint8)}), deflate=("archive/data/0",)))
    add(Case("zip-many-entries.pt", "model", "w.pt", match="entries"),
        _zip([(f"archive/data/{i}", b"") for i in range(MAX_ENTRIES_PLUS)]))
    add(Case("zip-in-zip.pt", "model", "w.pt", match="not a PyTorch model"), _zip([("inner.zip", good_st)]))
    add(Case("text-named-model.pt", "model", "model.pt", match="not a model file this app recognises"),
        b"print('hello')\n" * 10)
    add(Case("empty.pt", "model", "model.pt", match="is empty"), b"")
    add(Case("random.pt", "model", "model.pt", match="not a model file this app recognises"),
        np.random.default_rng(0).bytes(4096))
    add(Case("onnx-named.onnx", "model", "model.onnx", match="ONNX files cannot be pruned"), b"\x08\x07" * 32)
    add(Case("npz-as-model.pt", "model", "data.npz", match="Upload it as the dataset"),
        _npz(X=np.zeros((4, 64)), y=np.zeros(4, int)))

    # --- datasets (.npz) ------------------------------------------------------------------------------------------
    digits_like = np.random.default_rng(0).random((40, 1, 8, 8))
    labels = np.arange(40) % 10
    add(Case("npz-good.npz", "data", "d.npz", expect="loads"), _npz(X=digits_like, y=labels))
    add(Case("npz-header-bomb.npz", "data", "d.npz", match="declares|limit|holds"),
        _zip([("X.npy", _npy_header_only((10**7, 10**7))), ("y.npy", _npy_header_only((4,), "<i8", b"\0" * 32))]))
    add(Case("npz-header-lies.npz", "data", "d.npz", match="declares|holds|damaged|truncated"),
        _zip([("X.npy", _npy_header_only((1000, 64))), ("y.npy", _npy_header_only((4,), "<i8", b"\0" * 32))]))
    add(Case("npz-compressed-bomb.npz", "data", "d.npz", match="limit", env={"PRUNING_EXPLORER_MAX_FILE_MB": "64"}),
        _zip([("X.npy", _npy_header_only((1 << 20, 16), "<f8", b"\0" * (128 << 20))),
              ("y.npy", _npy_header_only((1 << 20,), "<i8", b"\0" * (8 << 20)))], deflate=True))
    cid = "npz-object-pickle.npz"
    objects = np.empty(4, dtype=object)
    objects[:] = [evil(cid)] * 4
    buf = io.BytesIO()
    np.savez(buf, X=objects, y=np.zeros(4, int))
    add(Case(cid, "data", "d.npz", match="pickled"), buf.getvalue())
    add(Case("npz-float64-overflow.npz", "data", "d.npz", match="float32|NaN or infinite|range"),
        _npz(X=np.full((8, 64), 1e39), y=np.zeros(8, int)))
    add(Case("npz-nan.npz", "data", "d.npz", match="NaN"), _npz(X=np.full((8, 64), np.nan), y=np.zeros(8, int)))
    add(Case("npz-traversal-name.npz", "data", "d.npz", match="name|expected arrays|not a readable"),
        _zip([("../X.npy", _npz_member(np.zeros((4, 64)))), ("y.npy", _npz_member(np.zeros(4, int)))]))
    add(Case("npz-not-zip.npz", "data", "d.npz", match="not a readable"), b"X,y\n1,2\n")
    good_npz = _npz(X=digits_like, y=labels)
    add(Case("npz-truncated.npz", "data", "d.npz", match="not a readable|damaged|truncated"),
        good_npz[: len(good_npz) // 2])
    add(Case("npz-1d.npz", "data", "d.npz", match="batch dimension"), _npz(X=np.zeros(8), y=np.zeros(8, int)))
    add(Case("npz-float-labels.npz", "data", "d.npz", match="integer class labels"),
        _npz(X=np.zeros((4, 2)), y=np.array([0.5, 1, 2, 3])))
    add(Case("npz-huge-label.npz", "data", "d.npz", match="class|label"),
        _npz(X=np.zeros((4, 2)), y=np.array([0, 1, 2, 10**12])))
    add(Case("npz-strings.npz", "data", "d.npz", match="real numbers|dtype|numeric"),
        _npz(X=np.array([["a", "b"]] * 4), y=np.zeros(4, int)))
    add(Case("npz-many-members.npz", "data", "d.npz", match="members|arrays|entries|expected"),
        _zip([(f"a{i}.npy", _npz_member(np.zeros(1))) for i in range(20000)]))
    return cases


MAX_ENTRIES_PLUS = 100_001


def pt2_old_layout(graph: bytes, evil_entry: str, payload: object, hide: bool = True) -> bytes:
    """The .pt2 that ran code (issue 7): the pre-2.8 top-level layout beside an ``archive/archive_format``, with
    ``payload`` pickled as ``evil_entry`` and, when ``hide``, a harmless ``zz/`` copy that masked it from a check
    mapping names by dropping their first folder."""
    harmless = _tsave({})
    entries = [("archive/archive_format", b"pt2"), ("version", b"8.20"), ("serialized_exported_program.json", graph)]
    for name in ("serialized_state_dict.pt", "serialized_example_inputs.pt", "serialized_constants.pt"):
        entries.append((name, _tsave(payload) if name == evil_entry else harmless))
    if hide:
        entries.append((f"zz/{evil_entry}", harmless))
    return _zip(entries)


def exploit_pt2(marker: Path) -> bytes:
    """The issue's exploit, ready to write: its payload creates ``marker``."""
    with zipfile.ZipFile(io.BytesIO(_pt2(load_builtin("digits-mlp"), torch.zeros(2, 1, 8, 8)))) as z:
        graph = z.read("archive/models/model.json")
    return pt2_old_layout(graph, "serialized_constants.pt", _Payload(str(marker)))


def _npz_member(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_cases(cases: list[Case], path: Path) -> None:
    path.write_text(json.dumps([asdict(c) for c in cases], indent=1))


__all__ = ["Case", "build_corpus", "exploit_pt2", "pt2_old_layout", "write_cases"]
