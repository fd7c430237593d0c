r"""The command line: the app's sweeps and exports as batch jobs, over the same functions the app calls.

    python -m pruning_core models
    python -m pruning_core methods
    python -m pruning_core sweep --model digits-resnet --methods magnitude-global,group-l1 --ratios 0,0.5,0.9 \
        --out DIR
    python -m pruning_core sweep --weights my.safetensors --architecture digits-cnn --data my.npz \
        --methods group-l1 --grid 0 0.9 10 --out DIR
    python -m pruning_core export --model digits-resnet --method group-l1 --ratio 0.5 --out bundle.zip
    python -m pruning_core check                      # every paper check on every demo model
    python -m pruning_core check --checks id,ispasp --models digits-cnn --quick --json checks.json

``sweep`` writes DIR/sweep.json (``SweepResult.to_json``), DIR/points.csv and DIR/layers.csv and prints a table;
``export`` writes the bundle zip and prints its report; ``check`` prints the paper-check table (claim, our
figure, agrees) and exits 0 whatever the verdicts (a disagreement is a finding, not an error). Progress goes to stderr. A bad argument or input prints
one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .checks import CHECKS, format_table, run_check
from .data import DataError, load_digits, load_npz
from .export import FORMATS, ExportError, export_plan, format_report
from .groups import GroupError
from .loading import LoadedModel, ModelLoadError, load_builtin_model, load_model_file
from .methods import REGISTRY, make_method
from .models import ARCHITECTURES, DEMO_MODELS
from .plan import PlanError, check_ratio
from .sweep import ratio_grid, run_sweep
from .workbench import Workbench

_TABLE_COLUMNS = ["method", "ratio", "accuracy", "agreement", "params_fraction", "flops_fraction", "sparsity"]


class UsageError(Exception):
    """A bad command line or input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we promise one line
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pruning_core", description="Pruning Explorer from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the built-in architectures")
    sub.add_parser("methods", help="list the pruning methods")

    def model_and_data(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help=f"built-in model (default digits-resnet): {', '.join(ARCHITECTURES)}")
        p.add_argument("--weights", type=Path, help="a model file: state_dict, safetensors, TorchScript, .pt2")
        p.add_argument("--architecture", help="the built-in architecture a state_dict/safetensors file belongs to")
        p.add_argument("--trust-pickle", action="store_true",
                       help="allow unpickling a whole pickled model (runs its code: only for files you made)")
        p.add_argument("--data", type=Path, help=".npz with X and y (default: the bundled 8x8 digits)")
        p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")

    sweep = sub.add_parser("sweep", help="evaluate methods x ratios; write sweep.json, points.csv, layers.csv")
    model_and_data(sweep)
    sweep.add_argument("--methods", required=True, help="comma-separated method keys (see 'methods')")
    grid = sweep.add_mutually_exclusive_group(required=True)
    grid.add_argument("--ratios", help="comma-separated ratios removed, e.g. 0,0.1,0.5")
    grid.add_argument("--grid", nargs=3, metavar=("START", "STOP", "STEPS"),
                      help="STEPS evenly spaced ratios from START to STOP inclusive")
    sweep.add_argument("--structured", choices=["sliced", "masked"], default="sliced",
                       help="evaluate structured plans on the physically smaller model or the masked one")
    sweep.add_argument("--out", type=Path, required=True, help="output folder")

    export = sub.add_parser("export", help="export one pruned model as a verified zip bundle")
    model_and_data(export)
    export.add_argument("--method", required=True)
    export.add_argument("--ratio", required=True, help="fraction removed, from 0 to below 1")
    export.add_argument("--formats", default="state_dict,torch.export,torchscript",
                        help=f"comma-separated, from {', '.join(FORMATS)}")
    export.add_argument("--atol", type=float, default=1e-4, help="verification tolerance on the outputs")
    export.add_argument("--latency-repeats", type=int, default=20, help="timed runs per latency measurement")
    export.add_argument("--out", type=Path, required=True, help="the zip file to write")
    check = sub.add_parser("check", help="reproduce the seed methods' paper claims; print claim, figure, verdict")
    check.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, from {', '.join(CHECKS)}")
    check.add_argument("--models", default=",".join(DEMO_MODELS),
                       help="comma-separated built-in models (default: the demo models)")
    check.add_argument("--weights", type=Path, help="check a model file instead of built-in models")
    check.add_argument("--architecture", help="the built-in architecture a state_dict/safetensors file belongs to")
    check.add_argument("--trust-pickle", action="store_true", help="allow unpickling a whole pickled model")
    check.add_argument("--data", type=Path, help=".npz with X and y (default: the bundled 8x8 digits)")
    check.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    check.add_argument("--quick", action="store_true", help="the smaller versions the tests run")
    check.add_argument("--json", type=Path, help="also write the results (and timings) to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"models": _models, "methods": _methods, "sweep": _sweep, "export": _export,
                "check": _check}[args.command](args)
    except (UsageError, ModelLoadError, DataError, PlanError, GroupError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ----- commands --------------------------------------------------------------------------------------------------
def _models(args) -> int:
    for name, arch in ARCHITECTURES.items():
        weights = "demo weights" if arch.weights else "no weights (load your own)"
        print(f"{name:20} {arch.title}; input {'x'.join(map(str, arch.input_shape))}; {weights}")
    return 0


def _methods(args) -> int:
    for key, spec in REGISTRY.items():
        print(f"{key:18} {spec.granularity:13} {spec.description}")
    return 0


def _sweep(args) -> int:
    methods = _method_keys(args.methods)
    ratios = _ratios(args)
    loaded, wb = _workbench(args)
    total = len(methods) * len(ratios)

    def progress(done, total_, point):
        r = point.row
        _log(f"[{done}/{total_}] {r['method']} @ {r['ratio']:g}: accuracy {r['accuracy']:.4f}, "
             f"params {r['params_fraction']:.1%}")

    _log(f"sweeping {len(methods)} methods x {len(ratios)} ratios = {total} points on {wb.device}")
    result = run_sweep(wb, methods, ratios, args.structured, progress)
    result.meta.update({"model_file": str(args.weights) if args.weights else None, "kind": loaded.kind,
                        "architecture": loaded.architecture})
    args.out.mkdir(parents=True, exist_ok=True)
    points_csv, layers_csv = result.to_csv()
    (args.out / "sweep.json").write_text(result.to_json())
    (args.out / "points.csv").write_text(points_csv)
    (args.out / "layers.csv").write_text(layers_csv)
    print(result.points[_TABLE_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _log(f"wrote {args.out / 'sweep.json'}, points.csv, layers.csv")
    return 0


def _export(args) -> int:
    (method,) = _method_keys(args.method)
    ratio = _ratio(args.ratio)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UsageError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    loaded, wb = _workbench(args)
    _log(f"planning {method} at ratio {ratio:g} on {wb.device}")
    plan = make_method(method).prepare(wb).plan(ratio)
    _log("exporting and verifying " + ", ".join(formats))
    bundle = export_plan(wb, plan, formats, atol=args.atol, latency_repeats=max(1, args.latency_repeats),
                         architecture=loaded.architecture)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(bundle.zip_bytes)
    print(format_report(bundle.report), end="")
    _log(f"wrote {args.out} ({len(bundle.zip_bytes):,} bytes)")
    return 0


def _check(args) -> int:
    keys = [k.strip() for k in args.checks.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CHECKS]
    if unknown or not keys:
        raise UsageError(f"unknown check {unknown[0] if unknown else args.checks!r}; available: {', '.join(CHECKS)}")
    if args.weights:
        args.model = None
        benches = [_workbench(args)[1]]
    else:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        bad = [n for n in names if n not in ARCHITECTURES]
        if bad or not names:
            raise UsageError(f"unknown model {bad[0] if bad else args.models!r}; available: {', '.join(ARCHITECTURES)}")
        benches = []
        for name in names:
            args.model = name
            benches.append(_workbench(args)[1])
    results, timings = [], []
    for wb in benches:
        for key in keys:
            _log(f"checking {key} on {wb.name}{' (quick)' if args.quick else ''}")
            report = run_check(key, wb, quick=args.quick,
                               progress=lambda f, text: _log(f"  {f:4.0%} {text}"))
            results += report.results
            timings.append({"check": key, "model": wb.name, "seconds": round(report.seconds, 2)})
            for note in report.notes:
                _log(f"  note: {note}")
    print(format_table(results))
    for t in timings:
        print(f"{t['check']:8} on {t['model']:16} {t['seconds']:8.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"quick": args.quick, "timings": timings,
                                         "results": [dataclasses.asdict(r) for r in results]}, indent=1))
    return 0


# ----- argument checks and set-up --------------------------------------------------------------------------------
def _method_keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in REGISTRY]
    if unknown or not keys:
        raise UsageError(f"unknown method {unknown[0] if unknown else text!r}; available: {', '.join(REGISTRY)}")
    return keys


def _ratio(text: str) -> float:
    try:
        return check_ratio(float(text))
    except ValueError as e:  # PlanError is a ValueError; float() raises the plain kind
        raise UsageError(str(e) if isinstance(e, PlanError) else f"the ratio must be a number, got {text!r}")


def _ratios(args) -> list[float]:
    if args.ratios is not None:
        ratios = [_ratio(r) for r in args.ratios.split(",") if r.strip()]
        if not ratios:
            raise UsageError("--ratios needs at least one ratio")
        return ratios
    start, stop, steps = args.grid
    try:
        return ratio_grid(float(start), float(stop), int(steps))
    except ValueError as e:
        raise UsageError(f"bad --grid {start} {stop} {steps}: {e}")


def _workbench(args) -> tuple[LoadedModel, Workbench]:
    if args.weights and args.model:
        raise UsageError("give either --model or --weights, not both")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; use --device cpu")
    if args.weights:
        try:
            data = args.weights.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {args.weights}: {e.strerror or e}")
        loaded = load_model_file(data, args.weights.name, args.architecture, args.trust_pickle)
    else:
        loaded = load_builtin_model(args.model or "digits-resnet")
    if args.data:
        try:
            splits = load_npz(args.data.read_bytes(), args.data.name)
        except OSError as e:
            raise UsageError(f"cannot read {args.data}: {e.strerror or e}")
    else:
        splits = load_digits()
    _log(f"model {loaded.name} ({loaded.kind}), data {splits.name}")
    for note in loaded.notes:
        _log(f"note: {note}")
    return loaded, Workbench(loaded.model, splits, device=args.device, name=loaded.name)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
