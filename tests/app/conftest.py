"""AppTest fixtures: a fresh app per test with Streamlit's process-global caches cleared, and a reader for the
plotly figures a page drew (AppTest has no typed plotly accessor; the figure travels as JSON, and plotly >= 6
encodes numeric arrays as base64 ``{"dtype", "bdata"}``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
STATE_KEY = "explorer"  # explorer_ui.state.STATE_KEY


@pytest.fixture(autouse=True)
def clear_streamlit_caches():
    """cache_resource / cache_data entries outlive an AppTest; without this, tests would share models."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def app() -> AppTest:
    """The app after its first run: the demo (digits-resnet on the bundled digits) on the Model & data page."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _array(v):
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:  # 2-D arrays (heatmap z) carry their shape as "rows, cols"
            a = a.reshape([int(n) for n in str(v["shape"]).split(",")])
        return a.tolist()
    return v


def _decoded(value):
    """Every typed array in a figure's JSON, wherever it is (x, y, marker sizes, customdata), as a list."""
    if isinstance(value, dict):
        return _array(value) if "bdata" in value else {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def decode_figure(element) -> dict:
    return _decoded(json.loads(element.proto.spec))


@pytest.fixture
def figures():
    """figures(at) -> {chart key: figure dict} for every plotly chart on the current page."""
    def read(at: AppTest) -> dict[str, dict]:
        return {el.key: decode_figure(el) for el in at.get("plotly_chart")}
    return read


@pytest.fixture
def state():
    """state(at) -> the app's typed session state (``explorer_ui.ExplorerState``) after a run."""
    return lambda at: at.session_state[STATE_KEY]
