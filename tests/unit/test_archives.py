"""The archive checks and the .pt2 reader: our reader gives the program torch's own reader gives, the layout
checks refuse what torch never writes, and the unpickling guard holds in the loading thread only."""

import io
import threading

import pytest
import torch

from pruning_core import load_builtin
from pruning_core.archives import (
    ArchiveError,
    check_pt2,
    load_exported_program,
    open_archive,
    refuse_full_unpickling,
    safe_sympy_expression,
    unsafe_graph_strings,
)

X = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pt2(model) -> bytes:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (X[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},)), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_our_pt2_reader_gives_the_program_torch_reads(name):
    data = _pt2(load_builtin(name))
    archive = open_archive(data, "m.pt2")
    check_pt2(archive, "m.pt2")
    ours = load_exported_program(archive, "m.pt2")
    theirs = torch.export.load(io.BytesIO(data))
    assert ours.state_dict.keys() == theirs.state_dict.keys()
    assert all(torch.equal(ours.state_dict[k], theirs.state_dict[k]) for k in ours.state_dict)
    with torch.inference_mode():
        torch.testing.assert_close(ours.module()(X), theirs.module()(X), rtol=0, atol=0)


def test_guard_refuses_full_unpickling_in_this_thread_only(tmp_path):
    buf = io.BytesIO()
    torch.save(_Marker(tmp_path / "here"), buf)
    data = buf.getvalue()
    with refuse_full_unpickling():
        with pytest.raises(ArchiveError, match="weights_only=False"):
            torch.load(io.BytesIO(data), weights_only=False)
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(io.BytesIO(data))  # not saying is made weights-only
        other = {}
        thread = threading.Thread(target=lambda: other.update(obj=torch.load(io.BytesIO(data), weights_only=False)))
        thread.start()
        thread.join()
    assert not (tmp_path / "here").exists() or "obj" in other
    assert "obj" in other  # another session's trusted load still works
    torch.load(io.BytesIO(data), weights_only=False)  # and after the block, this thread is back to normal
    assert (tmp_path / "here").exists()


def test_graph_strings_allow_torch_operators_only():
    good = {"nodes": [{"target": "torch.ops.aten.conv2d.default"}, {"target": "_operator.getitem"},
                      {"expr_str": "Symbol('s77', positive=True, integer=True)"}]}
    assert unsafe_graph_strings(good) == []
    for target in ("os.system", "builtins.eval", "torch.load", "torch.ops.aten.from_file.default",
                   "torch.ops.aten.set_.source_Storage", "torch.ops.mylib.run.default"):
        assert unsafe_graph_strings({"a": [{"target": target}]}) == [target]
    assert not safe_sympy_expression("__import__('os').system('x')")
    assert not safe_sympy_expression("Symbol('s1').__class__")
    assert safe_sympy_expression("2*Symbol('s1', positive=True) + 1")


def test_deeply_nested_graph_json_does_not_exhaust_the_stack():
    doc = {"target": "os.system"}
    for _ in range(100_000):
        doc = {"x": [doc]}
    assert unsafe_graph_strings(doc) == ["os.system"]
