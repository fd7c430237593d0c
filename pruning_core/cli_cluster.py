"""The command line's ``--ray`` options (``sweep`` and ``sensitivity``): the workbench the command opened, as a
recipe Ray workers rebuild (``recipes``), and the runner on the cluster the option names (``ray_runner``)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Callable, Iterator

from .cli_inputs import bundled_recipe, default_dataset
from .loading import LoadedModel
from .recipes import DataRecipe, ModelRecipe, RecipeError, WorkbenchRecipe

__all__ = ["add_ray_options", "cluster_runner", "recipe_from_args"]


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="spread the work over a Ray cluster (an optional extra): --ray alone starts a local cluster "
                   "on this machine, --ray auto joins the cluster this machine belongs to, --ray HOST:6379 or "
                   "ray://HOST:10001 a remote one")
    p.add_argument("--ray-workers", type=int, metavar="N",
                   help="workers (default: one per GPU, else the cluster's CPUs / --ray-threads)")
    p.add_argument("--ray-threads", type=int, default=1, metavar="N", help="torch threads per worker (default 1)")


def recipe_from_args(args, loaded: LoadedModel, read: Callable[[Path], bytes]) -> WorkbenchRecipe:
    """How a Ray worker builds the workbench the command opened: the model file's bytes (``read``, within the
    size limit) or the built-in name, the .npz's bytes or the bundled set's options, read there by the same
    loaders. A trusted pickle raises ``RecipeError``."""
    n_eval, n_calib = getattr(args, "eval_samples", None), getattr(args, "calib_samples", None)
    if args.weights:
        model = ModelRecipe.of("file", read(args.weights), trust_pickle=args.trust_pickle, filename=args.weights.name,
                               architecture=args.architecture)
    else:
        model = ModelRecipe.of("builtin", name=args.model or "digits-resnet")
    if args.data:
        data = DataRecipe.of("npz", read(args.data), n_eval=n_eval, n_calib=n_calib, filename=args.data.name)
    else:
        data = bundled_recipe(getattr(args, "dataset", None) or default_dataset(loaded), loaded, n_eval, n_calib)
    return WorkbenchRecipe(model, data, name=loaded.name)


@contextlib.contextmanager
def cluster_runner(args, loaded: LoadedModel, read: Callable[[Path], bytes], error: type[Exception],
                   log: Callable[[str], None]) -> Iterator:
    """None without ``--ray``; else a ``RayRunner`` on the cluster ``--ray`` names, its workers built, closed on
    the way out. Every problem (bad counts, Ray missing, an unreachable cluster, a worker refusing the file, a
    trusted pickle) is raised as ``error`` with one line for the person."""
    if not getattr(args, "ray", None):
        yield None
        return
    from .ray_runner import RayRunner, RayUnavailable

    if args.ray_workers is not None and args.ray_workers < 1:
        raise error(f"--ray-workers must be at least 1, got {args.ray_workers}")
    if args.ray_threads < 1:
        raise error(f"--ray-threads must be at least 1, got {args.ray_threads}")
    try:
        recipe = recipe_from_args(args, loaded, read)
    except RecipeError as e:
        raise error(f"--ray: {e}") from None
    address = None if args.ray == "local" else args.ray
    try:
        runner = RayRunner(recipe, address=address, workers=args.ray_workers, threads=args.ray_threads)
    except RayUnavailable as e:
        raise error(str(e)) from None
    with runner:
        try:
            infos = runner.infos()
        except RayUnavailable as e:
            raise error(str(e)) from None
        log(f"ray: {len(infos)} workers on {address or 'a local cluster'} ("
            f"{', '.join(sorted({i['device'] for i in infos}))}, {args.ray_threads} thread(s) each), workbenches "
            f"built in {max(i['build_seconds'] for i in infos):.1f} s")
        yield runner
