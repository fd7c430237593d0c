"""The fundamental limit (Zhang et al., NeurIPS 2024): Lanczos, SLQ and Hutchinson against exact spectra, the
Hessian-vector product against torch.autograd.functional.hessian, R(rho) against the magnitude method's masks,
the crossing rho = gw(R(rho)) against its closed form, and how it moves with epsilon."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from pruning_core import make_method
from pruning_core.algorithms.spectrum import SpectralDensity, hutchinson_trace, lanczos, slq
from pruning_core.limit import (
    EPSILON_FACTORS,
    LimitError,
    PrunableHessian,
    RemovedNorm,
    check_epsilon,
    estimate_limit,
    gaussian_width_ratio,
    magnitude_accuracy,
    observed_collapse,
    predict,
    predicted_ratio,
    trace_bound_ratio,
)


def _known_matrix(eigenvalues: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a random orthogonal Q (float64)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return torch.from_numpy((q * eigenvalues) @ q.T)


def _matvec(a: torch.Tensor):
    return lambda v: a @ v.to(a.dtype)


# ----- Lanczos, SLQ, Hutchinson on matrices with a known spectrum ---------------------------------------------
def test_lanczos_tridiagonal_matches_numpy_eigvalsh():
    rng = np.random.default_rng(1)
    for n in (5, 12, 30):
        m = rng.standard_normal((n, n))
        a = torch.from_numpy(m + m.T)
        run = lanczos(_matvec(a), n, n, seed=n)
        np.testing.assert_allclose(run.ritz_values, np.linalg.eigvalsh(a.numpy()), atol=1e-9)
        np.testing.assert_allclose(np.linalg.eigvalsh(run.tridiagonal()), run.ritz_values, atol=1e-12)
        assert run.ritz_weights.sum() == pytest.approx(1.0)
    # fewer steps: Ritz values interlace, the extremes from inside, the largest already close
    eig = np.linspace(-1.0, 10.0, 200) ** 3 / 100
    run = lanczos(_matvec(_known_matrix(eig)), 200, 25, seed=3)
    assert eig.min() - 1e-9 <= run.ritz_values.min() and run.ritz_values.max() <= eig.max() + 1e-9
    assert run.ritz_values.max() == pytest.approx(eig.max(), rel=1e-3)
    # a shorter run is the leading block of a longer one from the same start vector
    short = lanczos(_matvec(_known_matrix(eig)), 200, 10, seed=3)
    np.testing.assert_allclose(run.truncated(10).ritz_values, short.ritz_values, rtol=1e-10)
    np.testing.assert_allclose(run.truncated(10).ritz_weights, short.ritz_weights, rtol=1e-8, atol=1e-14)


def test_lanczos_stops_on_an_invariant_subspace_with_exact_eigenvalues():
    eig = np.repeat([0.0, 2.0, 5.0], 40)  # three distinct eigenvalues: the Krylov space has dimension 3
    run = lanczos(_matvec(_known_matrix(eig)), 120, 30, seed=0)
    assert run.steps == 3
    np.testing.assert_allclose(run.ritz_values, [0.0, 2.0, 5.0], atol=1e-9)


def test_slq_moments_are_the_gauss_quadrature_of_the_probe():
    eig = np.random.default_rng(2).gamma(0.5, 2.0, 300) - 0.3
    a = _known_matrix(eig)
    density = slq(_matvec(a), 300, 10, probes=1, seed=7)
    v = torch.randint(0, 2, (300,), generator=torch.Generator().manual_seed(7), dtype=torch.int8).double() * 2 - 1
    for k in range(0, 20):  # exact for every degree below 2m = 20
        exact = float(v @ torch.linalg.matrix_power(a, k) @ v) / 300
        assert density.moment(k) == pytest.approx(exact, rel=1e-8, abs=1e-10), k


def test_slq_and_hutchinson_match_the_exact_spectrum():
    eig = np.concatenate([np.zeros(300), np.random.default_rng(3).lognormal(-1.0, 0.5, 500), [-0.2] * 20])
    a = _known_matrix(eig, seed=4)
    exact_trace = eig.sum()
    probes = 8
    density = slq(_matvec(a), len(eig), 40, probes=probes, seed=0)
    for k in (1, 2, 3):
        # z^T B z / D over Rademacher z has variance 2 sum_{i != j} B_ij^2 / D^2 per probe
        b = torch.linalg.matrix_power(a, k).numpy()
        stderr = math.sqrt(2 * ((b ** 2).sum() - (np.diag(b) ** 2).sum()) / probes) / len(eig)
        assert abs(density.moment(k) - np.mean(eig ** k)) <= 4 * stderr, k
        assert density.moment(k) == pytest.approx(np.mean(eig ** k), rel=0.1), k
    assert density.trace == pytest.approx(exact_trace, rel=0.08)
    assert density.negative_mass == pytest.approx(20 / len(eig), abs=0.03)
    est = hutchinson_trace(_matvec(a), len(eig), probes=30, seed=1)
    assert abs(est.trace - exact_trace) <= 4 * est.stderr and est.trace == pytest.approx(exact_trace, rel=0.08)
    # a diagonal matrix: every Rademacher sample is exactly the trace
    diag = hutchinson_trace(lambda v: torch.from_numpy(eig) * v, len(eig), probes=3)
    assert diag.trace == pytest.approx(exact_trace, rel=1e-12) and diag.stderr == pytest.approx(0.0, abs=1e-9)
    # the quantity the limit needs: gw(R) from SLQ against gw from the exact eigenvalues, and the crossing
    removed = RemovedNorm.of(torch.from_numpy(np.random.default_rng(5).standard_normal(len(eig))))
    exact = SpectralDensity(eig, np.full(len(eig), 1 / len(eig)), np.zeros(len(eig)), len(eig))
    r2 = removed.squared_at(np.linspace(0, 1, 50))
    np.testing.assert_allclose(gaussian_width_ratio(r2, density.nodes, density.weights, 1.0),
                               gaussian_width_ratio(r2, exact.nodes, exact.weights, 1.0), atol=0.03)
    assert predicted_ratio(density, removed, 1.0) == pytest.approx(predicted_ratio(exact, removed, 1.0), abs=0.02)


def test_spectrum_functions_reject_bad_input():
    with pytest.raises(ValueError, match="at least one step"):
        lanczos(lambda v: v, 5, 0)
    with pytest.raises(ValueError, match="nonzero"):
        lanczos(lambda v: v, 5, 3, start=torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        lanczos(lambda v: v * float("nan"), 5, 3)
    with pytest.raises(ValueError, match="at least one probe"):
        hutchinson_trace(lambda v: v, 5, probes=0)


# ----- the model side: Hessian-vector products on the prunable weights ------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def test_hvp_on_prunable_weights_equals_autograd_hessian():
    torch.manual_seed(0)
    model = _Tiny().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    names = ["fc1.weight", "fc2.weight"]  # the prunable ones: biases and BatchNorm stay fixed
    hessian = PrunableHessian(model, names, x, y)
    assert hessian.dim == 12 + 6
    w0 = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def loss(flat):
        w1, w2 = flat[:12].view(3, 4), flat[12:].view(2, 3)
        h = torch.tanh(model.bn(nn.functional.linear(x, w1, model.fc1.bias)))
        return nn.functional.cross_entropy(nn.functional.linear(h, w2, model.fc2.bias), y)

    exact = torch.autograd.functional.hessian(loss, w0)
    built = torch.stack([hessian(e) for e in torch.eye(hessian.dim, dtype=torch.float64)], 1)
    torch.testing.assert_close(built, exact, rtol=1e-9, atol=1e-12)
    v = torch.randn(hessian.dim, dtype=torch.float64)
    torch.testing.assert_close(hessian(v), exact @ v, rtol=1e-9, atol=1e-12)
    # chunked data gives the same Hessian of the mean loss
    chunked = PrunableHessian(model, names, x, y, chunk=6)
    torch.testing.assert_close(chunked(v), exact @ v, rtol=1e-9, atol=1e-12)


def test_on_a_quadratic_model_the_estimated_spectrum_and_trace_are_exact():
    """A linear model with the squared error: H = (X^T X / N) kron I_out, known in closed form."""
    torch.manual_seed(1)
    n, d_in, d_out = 400, 30, 3
    model = nn.Linear(d_in, d_out, bias=False).double().eval()
    x = torch.randn(n, d_in, dtype=torch.float64) * torch.linspace(0.2, 2.0, d_in, dtype=torch.float64)
    y = torch.randn(n, d_out, dtype=torch.float64)
    hessian = PrunableHessian(model, ["weight"], x, y, loss=lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean())
    gram = (x.T @ x / n).numpy()
    exact = np.repeat(np.linalg.eigvalsh(gram), d_out)  # the weight is (out, in): each output row sees the Gram matrix
    v = torch.randn(hessian.dim, dtype=torch.float64)
    np.testing.assert_allclose(hessian(v).numpy(), (v.view(d_out, d_in).numpy() @ gram).reshape(-1), rtol=1e-10)
    run = lanczos(hessian, hessian.dim, hessian.dim, seed=0)  # a full run recovers the spectrum
    np.testing.assert_allclose(np.unique(run.ritz_values.round(8)), np.unique(exact.round(8)), rtol=1e-6)
    density = slq(hessian, hessian.dim, 12, probes=6, seed=0)
    for k in (1, 2):
        assert density.moment(k) == pytest.approx(np.mean(exact ** k), rel=0.1), k
    assert density.nodes.max() == pytest.approx(exact.max(), rel=1e-6)
    trace = hutchinson_trace(hessian, hessian.dim, probes=20, seed=0)
    assert abs(trace.trace - exact.sum()) <= 4 * trace.stderr and trace.trace == pytest.approx(exact.sum(), rel=0.05)


def test_the_hvp_refuses_what_it_cannot_differentiate():
    model = _Tiny().eval()
    x, y = torch.randn(4, 4), torch.randint(0, 2, (4,))
    with pytest.raises(LimitError, match="TorchScript"):
        PrunableHessian(torch.jit.script(model), ["fc1.weight"], x, y)
    with pytest.raises(LimitError, match="no prunable weights"):
        PrunableHessian(model, [], x, y)
    with pytest.raises(LimitError, match="eval mode"):
        PrunableHessian(_Tiny().train(), ["fc1.weight"], x, y)


# ----- R(rho), the crossing, epsilon ------------------------------------------------------------------------------
def test_removed_norm_is_what_global_magnitude_removes(demo_workbenches):
    wb = demo_workbenches["digits-mlp"]
    flat = torch.cat([p.detach().reshape(-1) for p in wb.prunable.values()])
    removed = RemovedNorm.of(flat)
    assert removed.weights == flat.numel() and removed.total == pytest.approx(float((flat.double() ** 2).sum()))
    method = make_method("magnitude-global").prepare(wb)
    for k in (0, 1, 1000, 8512, 17000):
        ratio = k / flat.numel()
        masks = method.plan(ratio).masks
        gone = sum(float((wb.prunable[n].double()[~m] ** 2).sum()) for n, m in masks.items())
        assert removed(ratio) == pytest.approx(math.sqrt(gone), rel=1e-9, abs=1e-12), k
    # continuous between breakpoints: half-way, R^2 adds half of the next weight's square
    s = np.sort(flat.double().numpy() ** 2)
    assert removed.squared_at(10.5 / flat.numel()) == pytest.approx(s[:10].sum() + 0.5 * s[10], rel=1e-9)
    # and magnitude_accuracy measures the same R from the plans' masks
    frame = magnitude_accuracy(wb, [0.0, 0.5])
    np.testing.assert_allclose(frame["R"], removed([0.0, 0.5]), rtol=1e-9)


def _uniform_case(epsilon: float, lam: float = 2.0, a: float = 0.1, d: int = 1000):
    """H = lam I and every |w| = a: R(rho)^2 = rho D a^2, so rho = 1 / (1 + c rho), c = D a^2 lam / (2 eps),
    whose root is (sqrt(1 + 4c) - 1) / (2c)."""
    removed = RemovedNorm.of(torch.full((d,), a, dtype=torch.float64))
    density = SpectralDensity(np.array([lam]), np.array([1.0]), np.zeros(1), d)
    c = d * a * a * lam / (2 * epsilon)
    return removed, density, (math.sqrt(1 + 4 * c) - 1) / (2 * c)


@pytest.mark.parametrize("epsilon", [0.05, 1.0, 20.0])
def test_the_crossing_matches_its_closed_form(epsilon):
    removed, density, expected = _uniform_case(epsilon)
    assert predicted_ratio(density, removed, epsilon) == pytest.approx(expected, abs=1e-9)
    # one eigenvalue: Jensen's bound is an equality, so the trace bound is the same number
    assert trace_bound_ratio(2.0 * 1000, removed, epsilon) == pytest.approx(expected, abs=1e-9)


def test_the_limit_grows_with_epsilon_as_the_formula_says():
    removed, density, _ = _uniform_case(1.0)
    ratios = [predicted_ratio(density, removed, e) for e in (0.01, 0.1, 1.0, 10.0, 100.0)]
    assert all(b > a for a, b in zip(ratios[:-1], ratios[1:], strict=True))
    # a spread spectrum, with zero eigenvalues (always prunable: gw >= their mass) and a trace bound below
    rng = np.random.default_rng(0)
    nodes = np.concatenate([[0.0], rng.lognormal(0, 1.5, 30)])
    weights = np.concatenate([[0.2], np.full(30, 0.8 / 30)])
    spread = SpectralDensity(nodes, weights, np.zeros(31), 1000)
    removed = RemovedNorm.of(torch.from_numpy(rng.standard_normal(1000)))
    trace = 1000 * float((weights * nodes).sum())
    previous = 0.0
    for eps in (1e-3, 1e-2, 1e-1, 1.0):
        rho = predicted_ratio(spread, removed, eps)
        assert 0.2 < rho < 1.0 and rho > previous
        assert trace_bound_ratio(trace, removed, eps) <= rho + 1e-12  # Jensen
        previous = rho
    assert predicted_ratio(SpectralDensity(np.zeros(3), np.full(3, 1 / 3), np.zeros(3), 3), removed, 1.0) == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_epsilon_is_refused(bad):
    with pytest.raises(LimitError, match="epsilon"):
        check_epsilon(bad)


def test_bad_weights_are_refused():
    with pytest.raises(LimitError, match="NaN"):
        RemovedNorm.of(torch.tensor([1.0, float("nan")]))
    with pytest.raises(LimitError, match="no prunable weights"):
        RemovedNorm.of(torch.zeros(0))


# ----- the estimate on a demo model --------------------------------------------------------------------------------
def test_estimate_on_the_residual_cnn(demo_workbenches, capsys):
    """The whole estimate on digits-resnet with its defaults; its time is printed (not asserted: the machine is
    shared)."""
    wb = demo_workbenches["digits-resnet"]
    before = {k: p.detach().clone() for k, p in wb.prunable.items()}
    start = time.perf_counter()
    est = estimate_limit(wb)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[limit] digits-resnet estimate: {seconds:.2f} s on {torch.get_num_threads()} threads, "
              f"predicted limit {est.ratio:.3f} removed, "
              f"trace bound {est.trace_bound:.3f}, epsilon {est.epsilon:.3g}")
    c = est.curvature
    assert c.products == 10 + 40 and c.weights == sum(p.numel() for p in wb.prunable.values())
    assert 0.0 < est.ratio < 1.0 and est.kept == pytest.approx(1 - est.ratio)
    assert est.epsilon_measured and est.epsilon == pytest.approx(c.loss_spread)
    # the crossing is on the curve: gw(R(rho*)) = rho*
    at = est.curve.iloc[(est.curve["ratio"] - est.ratio).abs().argmin()]
    assert at["gw"] == pytest.approx(est.ratio, abs=0.01)
    # the convergence frame: prefixes of the one Lanczos run, the last one the estimate itself
    assert list(est.convergence["steps"]) == [10, 20, 40]
    assert est.convergence["ratio"].iloc[-1] == pytest.approx(est.ratio)
    # epsilon sensitivity without new Hessian-vector products, monotone, and predict() agrees with it
    sens = est.sensitivity
    assert list(sens["factor"]) == list(EPSILON_FACTORS) and sens["ratio"].is_monotonic_increasing
    doubled = predict(c, est.epsilon * 2)
    assert doubled.ratio == pytest.approx(float(sens.loc[sens["factor"] == 2.0, "ratio"].iloc[0]))
    assert not doubled.epsilon_measured and c.products == 50
    # the workbench is left dense
    assert all(torch.equal(wb.prunable[k], v) for k, v in before.items())


def test_observed_collapse_is_the_first_ratio_losing_more_than_a_point():
    import pandas as pd

    frame = pd.DataFrame({"ratio": [0.0, 0.2, 0.4, 0.6, 0.8], "accuracy": [0.95, 0.95, 0.945, 0.93, 0.5]})
    assert observed_collapse(frame, 0.95) == 0.6
    assert observed_collapse(frame[frame["ratio"] < 0.5], 0.95) is None


# ----- the paper check ------------------------------------------------------------------------------------------
def test_the_check_runs_and_draws_on_a_demo_model(demo_workbenches):
    from pruning_core.checks import CHECKS, run_check

    wb = demo_workbenches["digits-mlp"]
    report = run_check("limit", wb, quick=True)
    kinds = {}
    for r in report.results:
        kinds.setdefault(r.kind, []).append(r)
    assert len(kinds["claim"]) == 2 and len(kinds["self-test"]) == 3 and len(kinds["description"]) == 2
    assert all(r.agrees for r in kinds["self-test"]) and all(r.agrees is None for r in kinds["description"])
    assert all(r.agrees is not None for r in kinds["claim"]) and report.complete
    rows = CHECKS["limit"].figures(report, dense_accuracy=wb.dense_metrics().accuracy)
    assert [list(r) for r in rows] == [["crossing", "accuracy"], ["density"]]
    shapes = rows[0]["accuracy"].to_dict()["layout"]["shapes"]
    lines = {s["line"]["dash"]: s["x0"] for s in shapes if s["x0"] == s["x1"]}  # the vertical lines
    summary = report.frames["summary"].iloc[0]
    assert lines["solid"] == pytest.approx(summary["predicted_limit"])
    assert lines["dash"] == pytest.approx(summary["trace_bound"]) and "dot" in lines  # the observed collapse


def test_the_claims_can_say_no():
    import pandas as pd

    from pruning_core.checks.limit import agreement_result, trace_bound_result
    from pruning_core.limit import Curvature

    frame = pd.DataFrame({"ratio": np.arange(10) / 10, "accuracy": [0.95] * 6 + [0.9] * 4})  # collapse at 0.6
    assert agreement_result(0.58, frame, 0.95).agrees is True
    assert agreement_result(0.30, frame, 0.95).agrees is False
    assert agreement_result(0.80, frame, 0.95).agrees is False
    flat = frame.assign(accuracy=0.95)  # never collapses on the grid
    assert agreement_result(0.3, flat, 0.95).agrees is False and agreement_result(0.88, flat, 0.95).agrees is None
    # a Hutchinson trace far below the spectrum's mean |eigenvalue| (negative curvature) puts the bound above
    removed = RemovedNorm.of(torch.from_numpy(np.random.default_rng(0).standard_normal(1000)))
    density = SpectralDensity(np.array([-5.0, 5.0]), np.array([0.5, 0.5]), np.zeros(2), 1000)

    def estimate(trace: float):
        from pruning_core.algorithms.spectrum import TraceEstimate

        curvature = Curvature("toy", density, TraceEstimate(trace, 0.0, np.array([trace])), removed, 0.1, 1.0, 10,
                              {"lanczos_steps": 2}, 0.0, 0)
        return predict(curvature)

    assert trace_bound_result(estimate(5000.0)).agrees is True  # Tr = sum |lambda|: Jensen holds
    assert trace_bound_result(estimate(50.0)).agrees is False
    assert trace_bound_result(estimate(-1.0)).agrees is None
