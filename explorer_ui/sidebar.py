"""The sidebar every screen shares: what is loaded, on which device, and its dense accuracy."""

from __future__ import annotations

import streamlit as st

from .formatting import plain
from .state import has_state, state


def render_sidebar() -> None:
    if not has_state():
        return
    s = state()
    dense = s.workbench.dense_metrics()
    with st.sidebar:
        st.markdown(f"**Model** · {plain(s.model.name)}  \n**Data** · {plain(s.data.name)}  \n"
                    f"**Device** · `{s.workbench.device}`")
        task = s.workbench.task
        if task.kind == "classification":
            st.metric("Dense accuracy", f"{dense.accuracy:.2%}",
                      help=f"On the {s.data.evaluation} evaluation samples; loss {dense.loss:.4f}.")
        else:
            st.metric("Task", "embeddings" if task.kind == "embedding" else "no labels",
                      help=f"{task.description}. The data has no labels: every figure compares the pruned model "
                           f"with the dense one on the {s.data.evaluation} evaluation samples.")
