"""The predicted limit of pruning (Zhang et al., NeurIPS 2024) on the Sweep and Sparsity screens: its settings
(epsilon, Hutchinson probes, Lanczos steps), the estimate made once per model and settings and kept in the
session's state (``ExplorerState.limits``; a new epsilon only re-solves, in milliseconds), and its summary."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pruning_core.limit import (
    DEFAULT_LANCZOS_STEPS,
    DEFAULT_PROBES,
    LimitError,
    LimitEstimate,
    estimate_curvature,
    predict,
)

from .state import state
from .widgets import keep


def limit_controls() -> LimitEstimate | None:
    """An expander with a toggle that estimates and draws the predicted limit, and its settings; returns the
    estimate for this model when the toggle is on (estimating it first, with a progress bar, if these
    settings have not been estimated on this model yet), else None."""
    s = state()
    shown = bool(st.session_state.get("limit_show", False))
    with st.expander("Predicted limit of pruning (Zhang et al., NeurIPS 2024)", expanded=shown):
        st.caption("How much unstructured global magnitude pruning can remove before the training loss leaves "
                   "its tolerance ε: the crossing ρ = gw(R(ρ)) of the Gaussian width of the loss sublevel set, "
                   "from the Hessian's spectrum (stochastic Lanczos quadrature). **ρ is the fraction removed.**")
        show = st.toggle("Estimate and draw the predicted limit", **keep("limit_show", False),
                         help="Hessian-vector products on the prunable weights: a few seconds on the demo models")
        c = st.columns(3)
        epsilon = c[0].number_input("ε, the loss tolerance (empty: the measured loss spread)", min_value=0.0,
                                    format="%g", **keep("limit_epsilon", None),
                                    help="The paper's ε is the standard deviation of the training loss over "
                                         "mini-batches of 128; changing it needs no new estimate")
        probes = c[1].number_input("Hutchinson probes (trace)", 1, 200, step=1, **keep("limit_probes", DEFAULT_PROBES))
        steps = c[2].number_input("Lanczos steps (spectrum)", 2, 1000, step=10,
                                  **keep("limit_steps", DEFAULT_LANCZOS_STEPS),
                                  help="More steps resolve the eigenvalues near zero, which decide the limit when "
                                       "ε is small; too few steps underestimate it")
        if not show:
            return None
        key = (s.key, int(probes), int(steps))
        if key not in s.limits:
            bar = st.progress(0.0, text="Estimating the Hessian's spectrum…")
            try:
                s.limits[key] = estimate_curvature(s.workbench, probes=int(probes), lanczos_steps=int(steps),
                                                   progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text))
            except LimitError as e:
                st.error(f"The limit could not be estimated for this model: {e}", icon="⚠️")
                return None
            finally:
                bar.empty()
        try:
            estimate = predict(s.limits[key], epsilon)
        except LimitError as e:
            st.error(f"No prediction: {e}", icon="⚠️")
            return None
        show_summary(estimate)
        return estimate


def show_summary(estimate: LimitEstimate) -> None:
    """The predicted limit, the trace bound and epsilon in one line, and rho* at epsilon x 0.5, 1, 2."""
    s = estimate.summary()
    where = "the measured loss spread" if estimate.epsilon_measured else "set here"
    bound = "n/a (Tr(H) not positive)" if pd.isna(estimate.trace_bound) else f"{estimate.trace_bound:.2f} removed"
    st.markdown(f"**Predicted limit: {estimate.ratio:.2f} removed** (keeps {estimate.kept:.0%} of the prunable "
                f"weights) · trace lower bound {bound} · ε = {estimate.epsilon:.3g} ({where})")
    table = estimate.sensitivity.rename(columns={"factor": "ε ×", "epsilon": "ε", "ratio": "predicted limit (removed)",
                                                 "trace_bound": "trace bound (removed)"})
    st.dataframe(table, hide_index=True, column_config={"ε": st.column_config.NumberColumn(format="%.3g")})
    conv = estimate.convergence
    half = (f" With the first {int(conv['steps'].iloc[-2])} Lanczos steps it would be {conv['ratio'].iloc[-2]:.2f}: "
            "a limit still rising with the steps is not converged." if len(conv) > 1 else "")
    st.caption(f"{s['products']} Hessian-vector products on {s['samples']} training samples in {s['seconds']:.1f} s "
               f"({s['probes']} probes, {s['lanczos_steps']} Lanczos steps); negative spectral mass "
               f"{s['negative_mass']:.0%}.{half} The line is for unstructured global magnitude pruning; a "
               "structured method's ratio counts channels. The Methods screen checks it against the observed "
               "collapse.")


__all__ = ["limit_controls", "show_summary"]
