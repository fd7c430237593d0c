"""Suffix recomputation: evaluate many single-group prunes of one model without re-running the layers before the
first layer each group touches.

A channel group's prune changes only the tensors of its member layers (producers, norms, consumers, residual
partners). Every value the forward pass computes before the first node that reads one of those tensors is the
same in the dense and in the pruned model, so a sensitivity analysis (``sensitivity.py``) computes those values
once and re-runs only the *suffix* for each ratio. The mechanics, on a ``torch.fx.symbolic_trace`` of the
working copy (whose GraphModule calls the SAME submodules, so ``Workbench.apply``'s in-place zeroing is seen):

  * ``cut``: the first node (in the graph's topological order) that calls a module holding, or fetches, one of
    the group's tensors (``call_module`` / ``get_attr``, matched by tensor identity, so tied weights count);
  * ``live(k)``: the values computed before node ``k`` that a node at or after ``k`` still reads (the input
    of a residual branch, for instance); ``segment(k0, k1)`` is a GraphModule with one placeholder per value of
    ``live(k0)`` that runs nodes ``k0..k1-1`` and returns ``live(k1)`` (or the model's output at the end), so a
    dense walk from cut to cut keeps only what is still needed;
  * in-place ops in a suffix (``x.relu_()``, ``nn.ReLU(inplace=True)``, ``F.relu(x, inplace=True)``,
    ``operator.iadd``, ``setitem``) would change a cached value between two ratios. ``mutated_inputs`` finds
    the live values a suffix may mutate (walking back from each mutated argument through every op that may
    return an alias of its input, stopping at ops known to return a new tensor); ``run`` snapshots those
    values (and every other live value sharing their storage) and writes them back after the suffix, so views
    keep their aliasing within one run and the cache is exact for the next.

``torch.fx`` traces ``out += x`` as an out-of-place add; a model that relies on such a mutation being seen through
another reference, or that branches on data (``if x.sum() > 0``), is caught by ``SuffixGraph`` (trace error) or
``check`` (the segments do not reproduce the model's output) and the caller falls back to full passes.
"""

from __future__ import annotations

import inspect
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn


class SuffixError(RuntimeError):
    """The model cannot be evaluated by suffixes (it cannot be traced, or its trace differs from the model)."""


INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                     operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
                     operator.irshift, operator.imatmul, operator.setitem}
# ops whose output is always a newly allocated tensor: walking back from a mutated value stops at them
FRESH_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.LayerNorm,
                 nn.GroupNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                 nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Embedding,
                 nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax)
FRESH_FUNCTIONS = {torch.relu, torch.sigmoid, torch.tanh, torch.add, torch.sub, torch.mul, torch.div,
                   torch.matmul, torch.cat, torch.stack, operator.add, operator.sub, operator.mul, operator.truediv,
                   operator.matmul, operator.neg, F.relu, F.gelu, F.silu, F.linear, F.conv1d, F.conv2d, F.conv3d,
                   F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.softmax, F.batch_norm, F.layer_norm}
FRESH_METHODS = {"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "matmul", "mean", "sum", "softmax",
                 "clone", "exp", "log", "pow", "sqrt"}


def _inplace_flag(node: fx.Node) -> bool:
    """Whether a call_function node passes ``inplace=True`` (by keyword or position)."""
    if node.kwargs.get("inplace") is True:
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # builtins without a signature, or a call this signature does not take
        return False
    return bound.arguments.get("inplace") is True


class SuffixGraph:
    """``SuffixGraph(model)``: the fx trace of ``model`` cut into segments (raises ``SuffixError`` when
    ``torch.fx.symbolic_trace`` fails or the model's forward takes more than one input without a default)."""

    def __init__(self, model: nn.Module):
        if isinstance(model, torch.jit.ScriptModule):
            raise SuffixError("TorchScript modules cannot be traced by torch.fx")
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError ... on what it cannot trace
            raise SuffixError(f"torch.fx cannot trace the model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self.start = len(self.placeholders)
        if not self.placeholders or any(n.op != "placeholder" for n in self.nodes[:self.start]):
            raise SuffixError("the traced graph does not start with its inputs")
        if any(not n.args for n in self.placeholders[1:]):
            raise SuffixError("the model's forward takes more than one input without a default")
        self.end = len(self.nodes)  # a segment ending here includes the output node and returns the model's output
        self._last_use = {n: max((self.index[u] for u in n.users), default=-1) for n in self.nodes}
        self._segments: dict[tuple[int, int], fx.GraphModule] = {}
        self._mutated: dict[int, list[int]] = {}

    # ----- where a group starts ----------------------------------------------------------------------------------
    def _reads(self, node: fx.Node) -> list[torch.Tensor]:
        """The parameters and buffers a node reads directly: all of a called module's (recursively), or the
        fetched tensor / all of the deepest fetched module's."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            return [*mod.parameters(), *mod.buffers()]
        if node.op == "get_attr":
            obj, owner = self.gm, self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
                if isinstance(obj, nn.Module):
                    owner = obj
            if isinstance(obj, torch.Tensor):
                return [obj]
            return [*owner.parameters(), *owner.buffers()] if owner is not self.gm else []
        return []

    def cut(self, tensors: list[torch.Tensor]) -> int:
        """Index of the first node that reads any of ``tensors`` (by identity); the first node after the inputs
        when none does (conservative: then the whole model is the suffix)."""
        ids = {id(t) for t in tensors}
        for k in range(self.start, self.end):
            if any(id(t) in ids for t in self._reads(self.nodes[k])):
                return k
        return self.start

    def live(self, k: int) -> list[fx.Node]:
        """Values computed before node ``k`` that a node at or after ``k`` reads, in graph order."""
        return [n for n in self.nodes[:k] if self._last_use[n] >= k]

    # ----- segments ----------------------------------------------------------------------------------------------
    def segment(self, k0: int, k1: int) -> fx.GraphModule:
        """GraphModule running nodes ``k0 .. k1-1`` on ``live(k0)`` (one positional argument each); returns the
        tuple ``live(k1)``, or the model's output when ``k1 == end``. Built once per (k0, k1)."""
        key = (k0, k1)
        if key not in self._segments:
            g = fx.Graph()
            env = {n: g.placeholder(n.name) for n in self.live(k0)}
            for n in self.nodes[k0:k1]:
                if n.op == "output":
                    g.output(fx.map_arg(n.args[0], lambda a: env[a]))
                    break
                env[n] = g.node_copy(n, lambda a: env[a])
            else:
                g.output(tuple(env[n] for n in self.live(k1)))
            self._segments[key] = fx.GraphModule(self.gm, g)
        return self._segments[key]

    def initial_env(self, x: torch.Tensor) -> dict[fx.Node, object]:
        """The inputs' values: ``x`` for the first, the declared default for the others."""
        env = {self.placeholders[0]: x}
        for p in self.placeholders[1:]:
            env[p] = p.args[0]
        return {n: env[n] for n in self.live(self.start)}

    def advance(self, env: dict[fx.Node, object], k0: int, k1: int) -> dict[fx.Node, object]:
        """The live values at ``k1`` from those at ``k0`` (``k0 <= k1 < end``)."""
        if k0 == k1:
            return env
        out = self.segment(k0, k1)(*[env[n] for n in self.live(k0)])
        return dict(zip(self.live(k1), out, strict=True))

    # ----- in-place safety ---------------------------------------------------------------------------------------
    def _mutated_args(self, node: fx.Node) -> list[fx.Node]:
        """The argument nodes an op writes into (empty for out-of-place ops)."""
        first = [node.args[0]] if node.args and isinstance(node.args[0], fx.Node) else []
        if node.op == "call_module":
            return first if getattr(self.gm.get_submodule(node.target), "inplace", False) is True else []
        if node.op == "call_method":
            t = str(node.target)
            dunder_inplace = t in ("__setitem__", "__ior__", "__iand__", "__ixor__") or (
                t.startswith("__i") and t[3:-2] in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul"))
            return first if (t.endswith("_") and not t.startswith("_")) or dunder_inplace else []
        if node.op == "call_function":
            name = getattr(node.target, "__name__", "")
            if node.target in INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_")):
                return first
            if isinstance(node.kwargs.get("out"), fx.Node):
                return [node.kwargs["out"]]
            return first if _inplace_flag(node) else []
        return []

    def _fresh(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            return isinstance(mod, FRESH_MODULES) and getattr(mod, "inplace", False) is not True
        if node.op == "call_function":
            return node.target in FRESH_FUNCTIONS and not _inplace_flag(node)
        return node.op == "call_method" and node.target in FRESH_METHODS

    def inplace_nodes(self, k: int) -> list[str]:
        """Names of the nodes at or after ``k`` that write into one of their arguments."""
        return [n.name for n in self.nodes[k:] if self._mutated_args(n)]

    def mutated_inputs(self, k: int) -> list[int]:
        """Positions in ``live(k)`` of the values that the suffix from ``k`` may write into (directly, or
        through an op that may return an alias of them: views, ``nn.Identity``, other in-place ops)."""
        if k in self._mutated:
            return self._mutated[k]
        live = {n: i for i, n in enumerate(self.live(k))}
        hit: set[int] = set()
        for node in self.nodes[k:]:
            stack, seen = list(self._mutated_args(node)), set()
            while stack:
                n = stack.pop()
                if n in seen:
                    continue
                seen.add(n)
                if n in live:
                    hit.add(live[n])
                elif self._mutated_args(n):
                    stack += self._mutated_args(n)  # an in-place op returns its written argument
                elif not self._fresh(n):
                    stack += n.all_input_nodes
        self._mutated[k] = sorted(hit)
        return self._mutated[k]

    def run(self, k: int, env: dict[fx.Node, object], guard: list[int]) -> torch.Tensor:
        """The model's output from the live values at ``k``. The values at positions ``guard``
        (``mutated_inputs(k)``), and every live tensor sharing storage with one of them, are snapshot before and
        written back after, so ``env`` is unchanged when this returns or raises."""
        args = [env[n] for n in self.live(k)]
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        if guard:
            storages = {args[i].untyped_storage().data_ptr() for i in guard if isinstance(args[i], torch.Tensor)}
            saved = [(a, a.clone()) for a in args
                     if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in storages]
        try:
            return self.segment(k, self.end)(*args)
        finally:
            for a, copy in saved:
                a.copy_(copy)

    # ----- checks and costs --------------------------------------------------------------------------------------
    def check(self, model: nn.Module, x: torch.Tensor, cuts: list[int]) -> dict[int, float]:
        """Walk ``x`` from cut to cut, run the suffix from the last one and compare with ``model(x)``; raises
        ``SuffixError`` if they differ. Returns, per cut, the bytes of live tensors per sample (to size the cache)."""
        per_sample = {}
        with torch.inference_mode():
            expected = model(x)
            try:
                env, pos = self.initial_env(x), self.start
                for k in sorted(set(cuts)):
                    env, pos = self.advance(env, pos, k), k
                    sizes = {a.data_ptr(): a.nelement() * a.element_size() for a in env.values()
                             if isinstance(a, torch.Tensor)}
                    per_sample[k] = sum(sizes.values()) / len(x)
                got = self.run(pos, env, self.mutated_inputs(pos))
            except Exception as e:  # the traced code fails where the model does not: evaluate the model instead
                raise SuffixError(f"the traced graph fails on the data ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        if not (isinstance(got, torch.Tensor) and got.shape == expected.shape
                and torch.allclose(got, expected, rtol=1e-3, atol=1e-4)):
            raise SuffixError("the traced graph does not reproduce the model's output (an in-place update seen "
                              "through another reference, or state outside the graph)")
        return per_sample

    def flops_from(self, k: int, per_module: dict[str, int]) -> int:
        """FLOPs of the suffix from ``k``: the per-layer counts (``metrics.count_flops``, batch 1; convolutions and
        matrix products of modules, 2 per multiply-add) of the modules it calls."""
        return sum(per_module.get(n.target, 0) for n in self.nodes[k:] if n.op == "call_module")
