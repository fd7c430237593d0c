"""Export: the pruned model, verified, in formats people deploy, with a report of what it measured.

``export_plan(wb, plan)`` returns an ``ExportBundle``: one zip with

  * ``model_state_dict.safetensors``: every tensor of the exported model (contiguous CPU copies). For a
    structured plan the tensors are physically smaller; ``loading.build_pruned_architecture`` reloads them.
  * ``model_sparse.safetensors`` (unstructured plans): every masked tensor stored as a bit-mask (numpy.packbits,
    1 bit per entry) plus its kept values; the other tensors dense. ``load_sparse_state_dict`` expands it back to
    exactly the dense-with-zeros state_dict.
  * ``model.pt2`` (``torch.export.save``, dynamic batch), ``model.torchscript.pt`` (``torch.jit.trace``), and on
    request ``model.onnx`` (``torch.onnx.export``, dynamo exporter).
  * ``plan.json`` (the plan: kept and removed channels or kept counts, the architecture, the input shape) and
    ``report.json`` / ``report.md`` (accuracy, loss, agreement, parameters, FLOPs and measured latency before and
    after; the realised speed-up next to the ideal one from FLOPs; file sizes; verification).

Latency is measured with ``latency.speedup``: the dense and the exported model side by side in interleaved
rounds (warm-up first, median and p10-p90 of the per-round ratios), at batch 1 and at a batch of 64 evaluation
samples, on the workbench's device with the current torch thread count (both reported). A pruned model that
comes out slower than the dense one gets a warning in the report (``speed.warning``): it happens with small or
odd channel counts, which CPU kernels pad to blocks of 8 or 16 channels.

An ONNX file is checked by running it: in onnxruntime (``InferenceSession``, CPU) when it is installed, else in
onnx's reference evaluator, on the evaluation samples against torch's outputs of the exported model; the
runtime, max |difference| and top-1 agreement are in ``formats.onnx.check``.

Nothing is offered unverified: a structured plan's physically smaller model must reproduce the masked working
copy's outputs on the evaluation split (``atol``, identical top-1 classes) or ``ExportError`` is raised, and
every written file is loaded back and run; a format that fails to export or to reproduce the outputs is left
out and its error recorded in the report (the state_dict and plan are always there).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import logging
import math
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import metrics
from .latency import SLOWER_TOLERANCE, batch_of, speedup
from .loading import infer_architecture, load_model_file
from .plan import Plan, PlanError
from .sparse_format import load_sparse_state_dict, save_sparse_state_dict
from .workbench import Workbench

FORMATS = ("state_dict", "torch.export", "torchscript", "onnx", "hf-folder")
FILE_NAMES = {"state_dict": "model_state_dict.safetensors", "sparse": "model_sparse.safetensors",
              "torch.export": "model.pt2", "torchscript": "model.torchscript.pt", "onnx": "model.onnx",
              "hf-folder": "hf_model/"}
# what a sentence-transformers folder adds to a Hugging Face one, copied from the loaded model's folder
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")
LATENCY_BATCH = 64  # the second batch size latency is measured at (besides 1)


class ExportError(ValueError):
    """The pruned model cannot be exported; the message says why, for the person exporting it."""


@dataclass
class ExportBundle:
    zip_bytes: bytes
    report: dict
    files: dict[str, int]  # file name in the zip -> size in bytes once extracted


def export_plan(wb: Workbench, plan: Plan, formats=("state_dict", "torch.export", "torchscript"),
                atol: float = 1e-4, latency_repeats: int = 20, architecture: str | None = None,
                latency_warmup: int = 3, latency_threads: int | None = None) -> ExportBundle:
    """Export ``plan`` applied to ``wb``'s model (see the module docstring).

    ``architecture``: the built-in architecture of ``wb``'s model, recorded in plan.json and used to reload the
    state_dict; inferred from the model's class and shapes when not given. Latency is measured on ``wb``'s
    device, batch 1 and a batch of 64 evaluation samples: ``latency_warmup`` untimed runs, then
    ``latency_repeats`` interleaved rounds of dense and exported model, with ``latency_threads`` torch threads
    (``None``: the current count).
    """
    if not (isinstance(atol, (int, float)) and math.isfinite(atol) and atol >= 0):
        raise ExportError(f"The verification tolerance must be a finite number of 0 or more, got {atol!r}.")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"Unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}.")
    architecture = architecture or infer_architecture(wb.model)
    example, batch = wb.example_input, batch_of(wb.eval_x, LATENCY_BATCH)

    wb.restore()
    dense_eval = wb.dense_metrics()
    before = {**_eval_dict(dense_eval), "params": wb.dense_params, "flops": wb.dense_flops[0]}

    model, verification = _exported_model(wb, plan, atol)
    after_eval, _ = metrics.evaluate_task(model, wb.eval_x, wb.eval_y, wb.task, wb.dense_outputs, wb.batch_size)
    kept = wb.kept_fraction_by_tensor(plan)
    prunable = wb.prunable
    after = {**_eval_dict(after_eval), "params": metrics.parameter_count(model),
             "params_nonzero": int(sum(int(torch.count_nonzero(p)) for p in model.parameters())),
             "flops": _flops(model, example)}
    speed = _speed(wb.model, model, example, batch, before["flops"], after["flops"], latency_warmup,
                   latency_repeats, latency_threads)
    for key, s in speed["batches"].items():
        before[f"latency_ms_batch{key}"] = s["dense"]["median_ms"]
        after[f"latency_ms_batch{key}"] = s["pruned"]["median_ms"]
    before["latency_batch"] = after["latency_batch"] = int(batch.shape[0])
    notes = []
    if not plan.is_structured:
        after["flops_if_zeros_skipped"] = metrics.flops_with_density(
            wb.dense_flops[1], {k.rsplit(".", 1)[0]: v for k, v in kept.items() if k.endswith("weight")})
        notes.append("Unstructured pruning keeps the tensors' shapes: the dense files and latency do not shrink; "
                     "model_sparse.safetensors stores only the kept weights.")

    # Everything from here on runs on the CPU: files must load on machines without the workbench's GPU.
    model = model.to("cpu")
    x_cpu = wb.eval_x.to("cpu")
    classes = wb.task.kind != "embedding"  # an embedding's argmax is a dimension, not a class
    with torch.inference_mode():
        expected = metrics.predict(model, x_cpu, wb.batch_size)
    state_dict = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    files: dict[str, bytes] = {}
    outcome: dict[str, dict] = {}

    writers = {"state_dict": lambda: _save_safetensors(state_dict),
               "torch.export": lambda: _save_torch_export(model, x_cpu[:2]),
               "torchscript": lambda: _save_torchscript(model, x_cpu[:2]),
               "onnx": lambda: _save_onnx(model, x_cpu[:2])}
    wanted = ["state_dict", *[f for f in formats if f != "state_dict"]]
    if not plan.is_structured:
        wanted.insert(1, "sparse")
        writers["sparse"] = lambda: save_sparse_state_dict(state_dict, {k: m.cpu() for k, m in plan.masks.items()})
    for fmt in wanted:
        name = FILE_NAMES[fmt]
        if fmt == "hf-folder":
            outcome[fmt] = _hf_folder(model, x_cpu, expected, atol, files)
            continue
        try:
            data = writers[fmt]()
            check = check_onnx(data, x_cpu, expected, classes) if fmt == "onnx" else None
            diff = _round_trip(fmt, data, state_dict, architecture, x_cpu, expected, atol, check, classes)
            files[name] = data
            outcome[fmt] = {"file": name, "status": "ok", "bytes": len(data), "round_trip_max_abs_difference": diff,
                            **({"check": check} if check else {})}
        except Exception as e:  # one format failing must not cost the person the others
            if fmt == "state_dict":
                raise ExportError(f"The weights could not be saved: {type(e).__name__}: {e}") from e
            outcome[fmt] = {"file": name, "status": "failed", "error": f"{type(e).__name__}: {_first_line(e)}"}

    plan_json = {**plan.to_json(wb.groups.sizes if plan.is_structured else None), "architecture": architecture,
                 "input_shape": list(wb.data.sample_shape), "model": wb.name}
    files["plan.json"] = json.dumps(plan_json, indent=1).encode()
    report = {
        "method": plan.method, "granularity": plan.granularity, "ratio_removed": plan.ratio,
        "realised_sparsity": _realised_sparsity(kept, prunable),
        "model": wb.name, "architecture": architecture, "data": wb.data.name, "device": str(wb.device),
        "evaluation_samples": len(wb.eval_y), "torch": torch.__version__, "task": wb.task.kind,
        "primary": wb.task.primary, "metric_labels": {m.key: m.label for m in wb.task.metrics},
        "verification": verification, "before": before, "after": after, "speed": speed, "formats": outcome,
        "files": {n: len(b) for n, b in files.items()}, "notes": notes,
    }
    files["report.json"] = json.dumps(report, indent=1).encode()
    files["report.md"] = format_report(report).encode()
    return ExportBundle(_zip(files), report, {n: len(b) for n, b in files.items()})


# ----- the model to export and its verification ----------------------------------------------------------------
def _exported_model(wb: Workbench, plan: Plan, atol: float) -> tuple[nn.Module, dict]:
    """The model to export (on ``wb``'s device) and how closely it reproduces the masked working copy."""
    x = wb.eval_x
    if plan.is_structured:
        try:
            model = wb.sliced_model(plan, share_untouched=False)
        except PlanError as e:
            raise ExportError(f"This plan cannot be made physically smaller: {e}") from e
    else:
        with wb.applied(plan) as masked:
            model = copy.deepcopy(masked)  # the masked dense model, detached from the workbench's working copy
    model.eval()
    with wb.applied(plan) as masked:
        reference = metrics.predict(masked, x, wb.batch_size)
    out = metrics.predict(model, x, wb.batch_size)
    diff = float((out - reference).abs().max()) if len(x) else 0.0
    same_class = float((out.argmax(1) == reference.argmax(1)).float().mean()) if len(x) else 1.0
    if wb.task.kind == "embedding":  # an embedding's argmax is a dimension, not a class: only the difference counts
        same_class = None
    if not diff <= atol or (same_class is not None and same_class < 1.0):
        changed = "" if same_class is None else f" and {1 - same_class:.2%} of predicted classes change"
        raise ExportError(f"The exported model does not reproduce the pruned model: outputs differ by up to "
                          f"{diff:.3g} (tolerance {atol:g}){changed}. "
                          "Nothing was exported; try the masked (unstructured) export or report this model.")
    return model, {"reference": "masked working copy", "max_abs_difference": diff, "top1_agreement": same_class,
                   "atol": atol, "samples": len(x)}


def _round_trip(fmt: str, data: bytes, state_dict: dict, architecture: str | None, x: torch.Tensor,
                expected: torch.Tensor, atol: float, onnx_check: dict | None = None,
                classes: bool = True) -> float | None:
    """Load a written file back and check it reproduces ``expected`` (or, for weights without a known
    architecture, the exact tensors). Returns the max abs output difference, or None for the tensor check.
    ``onnx_check``: ``check_onnx``'s result for an ONNX file, whose outputs it already compared. ``classes``:
    the outputs are class scores, so the top-1 classes must match too (not for embeddings)."""
    if onnx_check is not None:
        diff = onnx_check["max_abs_difference"]
        if not diff <= atol or (classes and onnx_check["top1_agreement"] < 1.0):
            raise ExportError(f"{onnx_check['runtime']} runs the file to outputs that differ from the exported "
                              f"model's by up to {diff:.3g}, top-1 agreement {onnx_check['top1_agreement']:.2%}")
        return diff
    if fmt == "onnx":
        out = onnx_runner(data)(x)
    elif fmt in ("state_dict", "sparse") and architecture is None:
        from safetensors.torch import load as load_safetensors

        back = load_sparse_state_dict(data) if fmt == "sparse" else load_safetensors(data)
        if back.keys() != state_dict.keys() or not all(torch.equal(back[k], v) for k, v in state_dict.items()):
            raise ExportError("the file does not reload to the exported tensors")
        return None
    else:
        out = metrics.predict(load_model_file(data, FILE_NAMES[fmt], architecture).model, x)
    diff = float((out - expected).abs().max())
    if not diff <= atol or (classes and not torch.equal(out.argmax(1), expected.argmax(1))):
        raise ExportError(f"the reloaded file's outputs differ from the exported model's by up to {diff:.3g}")
    return diff


def _hf_folder(model: nn.Module, x: torch.Tensor, expected: torch.Tensor, atol: float,
               files: dict[str, bytes]) -> dict:
    """A sentence encoder (``text.SentenceEncoder``) as a Hugging Face folder under ``hf_model/``: its config
    (with the pruned heads, ``config.pruned_heads``, so ``from_pretrained`` rebuilds the same shapes) and weights
    written by ``save_pretrained`` as safetensors, its tokenizer, and the sentence-transformers files of the folder
    it was loaded from. Verified by loading the folder back offline with ``text.load_sentence_encoder`` (the
    loader of uploads) and comparing the embeddings. Adds the files to ``files``; returns the format's outcome."""
    import tempfile
    from pathlib import Path

    name = FILE_NAMES["hf-folder"]
    bert, tokenizer = getattr(model, "bert", None), getattr(model, "tokenizer", None)
    if bert is None or tokenizer is None or not hasattr(bert, "save_pretrained"):
        return {"file": name, "status": "failed",
                "error": "only a Hugging Face sentence encoder (the MiniLM or an uploaded folder) has this format"}
    widths = getattr(bert.config, "intermediate_sizes", None)
    if widths and len(set(widths)) > 1:
        return {"file": name, "status": "failed",
                "error": f"the FFN widths differ by layer ({', '.join(map(str, widths))}); a BERT config holds one "
                         "width, so transformers could not rebuild this model: export a plan that removes the same "
                         "fraction in every layer, or use the state_dict"}
    try:
        from .text import load_sentence_encoder

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            bert.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            source = Path(getattr(model, "folder", "") or tmp)
            for rel in ST_FILES:
                if (source / rel).is_file() and not (out / rel).exists():
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    (out / rel).write_bytes((source / rel).read_bytes())
            written = {f"{name}{p.relative_to(out).as_posix()}": p.read_bytes()
                       for p in sorted(out.rglob("*")) if p.is_file()}
            back = load_sentence_encoder(out)
            got = metrics.predict(back, x)
        diff = float((got - expected).abs().max())
        if not diff <= atol:
            raise ExportError(f"the reloaded folder's embeddings differ from the exported model's by up to {diff:.3g}")
    except Exception as e:  # one format failing must not cost the person the others
        return {"file": name, "status": "failed", "error": f"{type(e).__name__}: {_first_line(e)}"}
    files.update(written)
    return {"file": name, "status": "ok", "bytes": sum(len(b) for b in written.values()),
            "round_trip_max_abs_difference": diff, "files": sorted(written)}


# ----- writers ---------------------------------------------------------------------------------------------------
def _save_safetensors(state_dict: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state_dict)


def _save_torch_export(model: nn.Module, example: torch.Tensor) -> bytes:
    # batch 2 and Dim.AUTO: a batch-1 example would specialise the program to batch size 1
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _save_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, and TorchScript is still what many runtimes load
        traced = torch.jit.trace(model, example, check_trace=True, check_inputs=[(example[:1],)])
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _save_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # it warns about every optional torchvision op it cannot find
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim.AUTO},))
    finally:
        onnx_logger.setLevel(level)
    return program.model_proto.SerializeToString()


class OnnxModel:
    """An ONNX model as a callable taking (N, ...) CPU tensors and returning the first output as a tensor.

    ``runtime="onnxruntime"``: an ``onnxruntime.InferenceSession`` on the CPU execution provider (its default
    graph optimisations and thread count), what a deployment would run. ``runtime="reference"``: onnx's
    reference evaluator (pure numpy, always available with onnx; slow, for checks). ``name``: the runtime and
    its version, for reports."""

    def __init__(self, data: bytes, runtime: str = "onnxruntime"):
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: it warns about every unused initialiser
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.name = f"onnxruntime {ort.__version__} ({', '.join(self.session.get_providers())})"
        elif runtime == "reference":
            import onnx
            from onnx.reference import ReferenceEvaluator

            self.session = ReferenceEvaluator(onnx.load_from_string(data))
            self.input_name = self.session.input_names[0]
            self.name = f"onnx {onnx.__version__} reference evaluator"
        else:
            raise ValueError(f"unknown ONNX runtime {runtime!r}; choose onnxruntime or reference")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out))


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_runner(data: bytes) -> OnnxModel:
    """The ONNX model in onnxruntime when it is installed (an optional extra), else in the reference evaluator."""
    return OnnxModel(data, "onnxruntime" if onnxruntime_available() else "reference")


def check_onnx(data: bytes, x: torch.Tensor, expected: torch.Tensor, classes: bool = True) -> dict:
    """Run the ONNX file ``data`` (``onnx_runner``) on the samples ``x`` (N, ...) and compare with torch's
    logits ``expected`` (N, classes) of the same model: the runtime, the samples, max |difference| and the
    fraction of samples whose top-1 class is the same (None when ``classes`` is false: embeddings)."""
    runner = onnx_runner(data)
    out = runner(x)
    note = None if onnxruntime_available() else "onnxruntime is not installed (optional: requirements-extras.txt)"
    return {"runtime": runner.name, "samples": len(x),
            "max_abs_difference": float((out - expected).abs().max()) if len(x) else 0.0,
            "top1_agreement": (float((out.argmax(1) == expected.argmax(1)).float().mean()) if len(x) else 1.0)
            if classes else None,
            **({"note": note} if note else {})}


# ----- loading a bundle back -----------------------------------------------------------------------------------
def load_exported(zip_bytes: bytes) -> dict[str, nn.Module]:
    """Every model file of a bundle, loaded back the way a user would: format -> module taking (N, *input_shape)
    CPU tensors and returning logits. Keys: "state_dict" and "sparse" (need the plan's architecture),
    "torch.export", "torchscript", "onnx" (an ``OnnxModel``: onnxruntime when installed, else onnx's reference
    evaluator)."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    architecture = json.loads(files["plan.json"])["architecture"]
    out = {}
    for fmt, name in FILE_NAMES.items():
        if name not in files:
            continue
        if fmt == "onnx":
            out[fmt] = onnx_runner(files[name])
        elif fmt in ("torch.export", "torchscript") or architecture is not None:
            out[fmt] = load_model_file(files[name], name, architecture).model
    return out


# ----- report --------------------------------------------------------------------------------------------------
def format_report(report: dict) -> str:
    """The report as Markdown (report.md, and the command line's summary)."""
    b, a = report["before"], report["after"]

    def row(label: str, key: str, fmt: str) -> str:
        before, after = b.get(key), a.get(key)
        cell = lambda v: format(v, fmt) if isinstance(v, (int, float)) else "n/a"  # noqa: E731
        return f"| {label} | {cell(before)} | {cell(after)} |"

    v = report["verification"]
    lines = [f"# Pruning export: {report['method']} at ratio {report['ratio_removed']:g} (removed)", "",
             f"Model {report['model']} ({report['architecture'] or 'architecture unknown'}), data {report['data']} "
             f"({report['evaluation_samples']} evaluation samples), device {report['device']}, torch "
             f"{report['torch']}. {report['granularity'].capitalize()} plan; realised sparsity "
             f"{report['realised_sparsity']:.1%} of prunable weights.", "",
             "| | before | after |", "|---|---|---|",
             *[row(label, key, ".2%" if key not in ("loss", "kl") else ".4f") for key, label in
               report.get("metric_labels", {"accuracy": "accuracy", "loss": "loss",
                                            "agreement": "agreement with dense"}).items()],
             row("parameters", "params", ",d"),
             row("FLOPs (batch 1)", "flops", ",d"), row("latency batch 1 (ms)", "latency_ms_batch1", ".3f"),
             row(f"latency batch {a.get('latency_batch', LATENCY_BATCH)} (ms)",
                 f"latency_ms_batch{a.get('latency_batch', LATENCY_BATCH)}", ".3f"), "",
             *_speed_lines(report.get("speed")),
             f"Verified against the {v['reference']} on {v['samples']} samples: max |difference| "
             f"{v['max_abs_difference']:.3g} (tolerance {v['atol']:g})" + (
                 f", top-1 agreement {v['top1_agreement']:.2%}." if v.get("top1_agreement") is not None else "."),
             "", "| file | size (bytes) | status |", "|---|---|---|"]
    for o in report["formats"].values():
        status = "verified by reloading" if o["status"] == "ok" else f"failed: {o['error']}"
        lines.append(f"| {o['file']} | {o.get('bytes', 0):,} | {status} |")
    for o in report["formats"].values():
        if "check" in o:
            c = o["check"]
            lines += ["", f"{o['file']} run in {c['runtime']} on {c['samples']} evaluation samples against torch: "
                          f"max |difference| {c['max_abs_difference']:.3g}"
                          + (f", top-1 agreement {c['top1_agreement']:.2%}" if c.get("top1_agreement") is not None
                             else "")
                          + (f" ({c['note']})." if c.get("note") else ".")]
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _speed_lines(speed: dict | None) -> list[str]:
    """The report's speed table: realised speed-up per batch size next to the ideal one from FLOPs."""
    if not speed:
        return []
    batches = speed["batches"]
    x = lambda v: f"{v:.2f}x" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    kept = speed["flops_kept"]
    lines = [f"Speed: dense and exported model timed side by side on {speed['device']}, {speed['threads']} torch "
             f"thread(s): {speed['warmup']} warm-up runs, then the median of {speed['repeats']} interleaved rounds "
             f"({speed['timer']}).", "",
             "| | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|" + "---|" * len(batches),
             "| realised speed-up (p10-p90 of rounds) | " + " | ".join(
                 f"{x(r['speedup'])} ({r['speedup_p10']:.2f}-{r['speedup_p90']:.2f})" for r in batches.values())
             + " |",
             "| FLOPs kept -> ideal speed-up (1 / FLOPs kept) | " + " | ".join(
                 f"{kept:.1%} -> {x(speed['ideal_speedup'])}" if kept else "n/a" for _ in batches) + " |",
             "| realised / ideal | " + " | ".join(
                 f"{r['efficiency']:.2f}" if r["efficiency"] is not None else "n/a" for r in batches.values()) + " |",
             ""]
    if speed["warning"]:
        lines += [f"**Warning:** {speed['warning']}", ""]
    return lines


# ----- small helpers -------------------------------------------------------------------------------------------
def _eval_dict(ev: metrics.EvalMetrics) -> dict:
    return {"accuracy": ev.accuracy, "loss": ev.loss, "agreement": ev.agreement, **ev.scores}


def _speed(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, batch: torch.Tensor, dense_flops: int | None,
           pruned_flops: int | None, warmup: int, repeats: int, threads: int | None) -> dict:
    """Dense and exported model timed side by side (``latency.speedup``) at batch 1 and ``len(batch)``: the
    report's ``speed`` entry, with a warning when the exported model is slower though it does fewer FLOPs."""
    kept = pruned_flops / dense_flops if isinstance(pruned_flops, int) and dense_flops else None
    results = {str(len(x)): speedup(dense, pruned, x, flops_kept=kept, warmup=warmup, repeats=repeats,
                                    threads=threads) for x in (example, batch)}
    first = next(iter(results.values())).dense
    # only where the FLOPs fell: a model with every FLOP kept (unstructured plans) differs from the dense one by noise
    slower = {b: r for b, r in results.items() if r.slower_than_dense and kept is not None and kept < 1.0}
    warning = None
    if slower:
        at = " and ".join(f"batch {b} ({r.speedup:.2f}x: {r.pruned.median_ms:.3g} ms against {r.dense.median_ms:.3g})"
                          for b, r in slower.items())
        warning = (f"The exported model is slower than the dense one at {at} on {first.device} with "
                   f"{first.threads} thread(s), although it keeps only {kept:.0%} of the FLOPs. Pruning does not "
                   "always pay off in time: CPU kernels work in blocks of 8 or 16 channels, so odd or small channel "
                   "counts cost about what the next block does, and small layers are bound by memory traffic and "
                   "per-layer overhead rather than by multiply-adds. Try another ratio, or measure on the hardware "
                   "you deploy to.")
    return {"device": first.device, "threads": first.threads, "timer": first.timer, "warmup": warmup,
            "repeats": repeats, "flops_kept": kept, "ideal_speedup": 1.0 / kept if kept else None,
            "slower_tolerance": SLOWER_TOLERANCE, "batches": {b: r.to_dict(times=True) for b, r in results.items()},
            "warning": warning}


def _flops(model: nn.Module, example: torch.Tensor) -> int | None:
    try:
        return metrics.count_flops(model, example)[0]
    except Exception:  # FlopCounterMode cannot see inside TorchScript; the report says "n/a" then
        return None


def _realised_sparsity(kept: dict[str, float], prunable: dict[str, torch.Tensor]) -> float:
    total = sum(p.numel() for p in prunable.values())
    return 1.0 - sum(kept[k] * p.numel() for k, p in prunable.items()) / total if total else 0.0


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            # binaries stored as they are, so the download's size is the files' real size; text deflated
            text = name.endswith((".json", ".md"))
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if text else zipfile.ZIP_STORED)
    return buf.getvalue()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


__all__ = ["FILE_NAMES", "FORMATS", "LATENCY_BATCH", "ExportBundle", "ExportError", "OnnxModel", "check_onnx",
           "export_plan", "format_report", "load_exported", "onnx_runner", "onnxruntime_available"]
