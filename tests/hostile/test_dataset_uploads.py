"""Hostile dataset uploads: zipped image folders, server-side image folders and CSVs of texts
(pruning_core/datasets). Every broken or hostile input gets a DataError whose message says what is wrong, within
bounded memory and time; good inputs of the same kinds load.

Each case runs in its own forked child of a worker process (this file run as a script, like tests/hostile/worker.py
does for the model and .npz corpus) with an address-space limit of the worker's size plus
``HOSTILE_MEMORY_MB`` (default 1024) and a CPU limit. The child reads its input file first, then resets its peak
resident memory (/proc/self/clear_refs), so the reported peak is what the loader itself took.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class UploadCase:
    id: str
    loader: str  # "zip", "folder", "csv" or "csv-stream" (a 1 GiB stream generated while it is read)
    path: str
    match: str = ""  # a regex the DataError's message must contain; "" for an input that must load
    limits: dict = field(default_factory=dict)  # pruning_core.datasets.folders constants lowered in the child
    max_peak_mb: int = 250


# ----- building the inputs ----------------------------------------------------------------------------------------
def _png(width: int, height: int, rows: bytes | None = None, extra: bytes = b"") -> bytes:
    """A PNG (8-bit RGB) whose IHDR declares ``width`` x ``height``: with ``rows`` the raw scanlines, else a
    few bytes of image data; ``extra`` chunks go before the image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _image(colour=(10, 200, 30), fmt="PNG", size=(40, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _noise_png(side: int = 200) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _zip(members, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:  # name: a str, or a ZipInfo that sets flags or attributes
            zf.writestr(name, data)
    return buf.getvalue()


def _good_members():
    return [("cat/a.png", _image((200, 20, 20))), ("cat/b.jpg", _image((190, 30, 30), "JPEG")),
            ("dog/c.png", _image((20, 200, 20)))]


def _patched(data: bytes, name: str, local_offset: int, central_offset: int, fmt: str, value: int) -> bytes:
    """``data`` with one field of member ``name`` set to ``value`` in its local header and its central-directory
    entry (what zipfile never writes: sizes that lie, flags it clears)."""
    out = bytearray(data)
    raw = name.encode()
    for signature, name_at, offset in ((b"PK\x03\x04", 30, local_offset), (b"PK\x01\x02", 46, central_offset)):
        at = out.index(signature)
        while out[at + name_at:at + name_at + len(raw)] != raw:
            at = out.index(signature, at + 4)
        struct.pack_into(fmt, out, at + offset, value)
    return bytes(out)


def _lying_size(data: bytes, name: str, declared: int) -> bytes:
    """``data`` with the uncompressed size of member ``name`` declared as ``declared`` (CRC and data unchanged)."""
    return _patched(data, name, 22, 24, "<I", declared)


def _zip_bomb(megabytes: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("cat/bomb.png", "w", force_zip64=True) as f:
            f.write(_png(64, 64))
            zero = bytes(1 << 20)
            for _ in range(megabytes):
                f.write(zero)
        zf.writestr("dog/c.png", _image())
    return buf.getvalue()


def _huge_jpeg(width: int, height: int) -> bytes:
    data = bytearray(_image(fmt="JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def build_cases(folder: Path) -> list[UploadCase]:
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[UploadCase] = []

    def add(cid: str, loader: str, content: bytes | None, match: str, **kw) -> None:
        path = folder / cid
        if content is not None:
            path.write_bytes(content)
        cases.append(UploadCase(cid, loader, str(path), match, **kw))

    good = _good_members()
    add("zip-good", "zip", _zip(good), "")
    add("zip-good-top-folder", "zip", _zip([(f"photos/{n}", d) for n, d in good]), "")
    add("zip-bomb-200MB", "zip", _zip_bomb(200), r"declares 200 MiB; one image file may be at most 64 MiB")
    add("zip-bomb-60MB", "zip", _zip_bomb(60), r"expands \d[\d,]* times .* this is a zip bomb")
    add("zip-declares-100MB-per-image", "zip", _lying_size(_zip(good), "cat/a.png", 100 << 20),
        r"declares 100 MiB|zip bomb")
    noise = _zip([("cat/noise.png", _noise_png()), *good[1:]])
    add("zip-declares-less-than-it-holds", "zip", _lying_size(noise, "cat/noise.png", 1000),
        r"damaged or truncated")
    for i, bad in enumerate(["../evil/a.png", "/abs/cat/a.png", "cat/../../a.png", "cat\\..\\a.png",
                             "C:/cat/a.png", "cat/a\x07.png"]):
        add(f"zip-path-{i}", "zip", _zip([*good, (bad, _image())]), r"absolute paths, '\.\.', backslashes")
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = 0o120777 << 16
    add("zip-symlink-member", "zip", _zip([*good, (link, "../../../etc/passwd")]), r"symbolic link")
    add("zip-encrypted-member", "zip", _patched(_zip([*good, ("cat/secret.png", _image())]), "cat/secret.png", 6, 8,
                                                "<H", 0x1), r"is encrypted")
    add("zip-bzip2-member", "zip", _zip(good, zipfile.ZIP_BZIP2), r"compression method")
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w", zipfile.ZIP_STORED) as zf:
        for i in range(50_001):
            zf.writestr(f"c/{i}.png", b"")
    add("zip-50001-members", "zip", many.getvalue(), r"more than 50,000 members")
    with_dup = io.BytesIO()
    with zipfile.ZipFile(with_dup, "w") as zf:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, data in [*good, ("cat/a.png", _image())]:
                zf.writestr(name, data)
    add("zip-duplicate-names", "zip", with_dup.getvalue(), r"two members named")
    add("zip-png-100000x100000", "zip", _zip([*good, ("cat/huge.png", _png(100_000, 100_000))]), r"pixels")
    add("zip-png-7000x7000", "zip", _zip([*good, ("cat/big.png", _png(7000, 7000))]),
        r"7,000 x 7,000 pixels; one image may have at most 40,000,000")
    add("zip-jpeg-60000x60000", "zip", _zip([*good, ("cat/huge.jpg", _huge_jpeg(60_000, 60_000))]), r"pixels")
    add("zip-total-pixel-budget", "zip", _zip(good), r"pixels in all", limits={"MAX_TOTAL_PIXELS": 3000})
    bomb_text = b"Comment\x00\x00" + zlib.compress(bytes(100 << 20), 9)
    ztxt = (struct.pack(">I", len(bomb_text)) + b"zTXt" + bomb_text + struct.pack(">I", zlib.crc32(b"zTXt" +
                                                                                               bomb_text)))
    add("zip-png-text-chunk-bomb", "zip", _zip([*good, ("cat/text.png", _png(4, 4, bytes(4 * 13), ztxt))],
                                               zipfile.ZIP_STORED),
        r"damaged or malformed image \(ValueError: Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK")
    add("zip-text-named-png", "zip", _zip([*good, ("cat/fake.png", b"just some text, not an image\n" * 10)]),
        r"not a PNG or JPEG image \(its contents are something else")
    add("zip-gif-named-png", "zip", _zip([*good, ("cat/anim.png", _image(fmt="GIF"))]), r"not a PNG or JPEG image")
    add("zip-txt-file", "zip", _zip([*good, ("cat/readme.txt", b"notes")]), r"not a PNG or JPEG image \(\.png")
    add("zip-truncated-png", "zip", _zip([("cat/cut.png", _noise_png()[:5000]), *good[1:]]),
        r"damaged or truncated")
    add("zip-empty-folders-only", "zip", _zip([("cat/", b""), ("dog/", b"")]), r"holds no images")
    add("zip-image-outside-class-folders", "zip", _zip([*good, ("loose.png", _image())]),
        r"not where a class folder's image goes")
    add("zip-one-image", "zip", _zip(good[:1]), r"at least 2 images")
    add("zip-not-a-zip", "zip", b"GIF89a" + bytes(100), r"not a zip archive")
    add("zip-damaged", "zip", _zip(good)[:-30], r"not a readable zip archive|damaged")

    def tree(cid: str, layout: dict[str, bytes | None]) -> Path:
        root = folder / cid
        root.mkdir()
        for rel, data in layout.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                p.mkdir(exist_ok=True)
            else:
                p.write_bytes(data)
        return root

    members = dict(good)
    tree("folder-good", members)
    add("folder-good", "folder", None, "")
    root = tree("folder-symlink", members)
    (root / "cat" / "passwd.png").symlink_to("/etc/passwd")
    add("folder-symlink", "folder", None, r"symbolic link")
    tree("folder-target", members)
    (folder / "folder-root-link").symlink_to(folder / "folder-target")
    add("folder-root-link", "folder", None, r"is a symbolic link")
    root = tree("folder-fifo", members)
    os.mkfifo(root / "cat" / "pipe.png")
    add("folder-fifo", "folder", None, r"not a regular file")
    tree("folder-empty", {})
    add("folder-empty", "folder", None, r"holds no images")
    tree("folder-empty-class", {**members, "emu": None})
    add("folder-empty-class", "folder", None, r"class folder 'emu' holds no images")
    tree("folder-nested", {**members, "dog/sub/d.png": _image()})
    add("folder-nested", "folder", None, r"no deeper folders")
    add("folder-is-a-file", "folder", b"plain file", r"is not a directory")
    add("folder-missing", "folder", None, r"is not a directory")
    tree("folder-huge-png", {**members, "cat/huge.png": _png(100_000, 100_000)})
    add("folder-huge-png", "folder", None, r"pixels")

    add("csv-good", "csv", b"text,label\nA good film.,pos\nA bad film.,neg\n", "")
    add("csv-1GiB-stream", "csv-stream", None, r"larger than 64 MiB")
    add("csv-70MB", "csv", b"text\n" + (b"a" * 99 + b"\n") * 700_000, r"at most 64 MiB", max_peak_mb=120)
    add("csv-field-over-limit", "csv", b"text\n\"" + b"x" * 300_000 + b"\"\n", r"field larger than field limit")
    add("csv-150000-rows", "csv", b"text\n" + b"a\n" * 150_000, r"more than 100,000 rows")
    add("csv-nul-byte", "csv", b"text\nabc\x00def\n", r"NUL characters")
    add("csv-text-too-long", "csv", b"text\n" + b"y" * 30_000 + b"\n", r"at most 20,000")
    add("csv-label-huge", "csv", b"text,label\na,1\nb,99999999999999999999\n", r"too large")
    add("csv-not-utf8", "csv", b"text\n\xc3\x28 broken\n", r"not UTF-8")
    return cases


# ----- the worker ---------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class _EndlessStream(io.RawIOBase):
    """A readable stream of ``size`` bytes of CSV made while it is read: one header, then one ever-growing field."""

    def __init__(self, size: int):
        self.left, self.started = size, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        if not self.started:
            self.started = True
            return (b"text\n" + b"z" * n)[:n]
        return b"z" * n


def _run(case: dict) -> None:
    from pruning_core.datasets import folders, load_image_folder, load_image_folder_zip
    from pruning_core.datasets.text_csv import read_text_csv

    for key, value in case["limits"].items():
        setattr(folders, key, value)
    data = Path(case["path"]).read_bytes() if case["loader"] in ("zip", "csv") else None
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak: the input's bytes are not the loader's
    except OSError:
        pass
    base = _status_kb("VmRSS")
    try:
        if case["loader"] == "zip":
            load_image_folder_zip(data, Path(case["path"]).name, size=32)
        elif case["loader"] == "folder":
            load_image_folder(case["path"], size=32)
        elif case["loader"] == "csv":
            read_text_csv(data, Path(case["path"]).name)
        else:
            read_text_csv(_EndlessStream(1 << 30), "endless.csv")
        result = {"outcome": "loads"}
    except Exception as e:  # noqa: BLE001 - the test reports which type it was
        from pruning_core.data import DataError

        kind = "error" if isinstance(e, DataError) else "other-exception"
        result = {"outcome": kind, "type": type(e).__name__, "message": str(e)[:2000]}
    result["peak_mb"] = round((_status_kb("VmHWM") - base) / 1024, 1)
    return result


def worker(cases_path: str, results_path: str) -> None:
    import torch

    import pruning_core.datasets  # noqa: F401 - imported once, before the children fork

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
        folder = tmp_path_factory.mktemp("uploads")
        cases = build_cases(folder / "files")
        (folder / "cases.json").write_text(json.dumps([asdict(c) for c in cases]))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run([sys.executable, __file__, str(folder / "cases.json"), str(folder / "results.json")],
                       check=True, env=env, timeout=600)
        return {c.id: c for c in cases}, json.loads((folder / "results.json").read_text())

    def test_every_case_ran_and_the_corpus_covers_each_loader(uploads):
        cases, results = uploads
        assert set(results) == set(cases) and len(cases) >= 40
        assert {c.loader for c in cases.values()} == {"zip", "folder", "csv", "csv-stream"}

    def test_good_uploads_load_and_hostile_ones_get_one_clear_data_error(uploads):
        cases, results = uploads
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

    def test_memory_and_time_stay_bounded(uploads):
        cases, results = uploads
        over = [f"{cid}: peak {results[cid].get('peak_mb')} MB > {c.max_peak_mb} MB, {results[cid]['seconds']} s"
                for cid, c in cases.items()
                if results[cid].get("peak_mb", 1e9) > c.max_peak_mb or results[cid]["seconds"] > 20]
        assert not over, "\n".join(over)
