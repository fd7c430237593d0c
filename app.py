"""Pruning Explorer: the entry point. It only routes: page config, the session's workbench, the shared
sidebar, and st.navigation over the screens in pages/.

    streamlit run app.py
"""

import streamlit as st

import explorer_ui
from pruning_core import runtime

# once per process: one thread count for every session's torch work, and the imported modules kept out of the
# full garbage collection Streamlit runs after every script run (pruning_core/runtime.py says why)
runtime.configure_threads()
runtime.tune_malloc()  # freed activations reused by the next batch (runtime.py says why)
runtime.freeze_long_lived_objects()

# an emoji, not a material icon: with a material icon and no page_icon the browser fetches fonts online
st.set_page_config(page_title="Pruning Explorer", page_icon="✂️", layout="wide")

try:
    explorer_ui.ensure_session()
except Exception as e:  # the bundled demo failing to load is a broken install, not a user error
    explorer_ui.show_error(e, "The demo model could not be loaded")
    st.stop()

page = st.navigation([
    st.Page("pages/model_data.py", title="Model & data", default=True),
    st.Page("pages/sweep.py", title="Sweep"),
    st.Page("pages/layers.py", title="Layers"),
    st.Page("pages/sparsity.py", title="Sparsity"),
    st.Page("pages/methods.py", title="Methods"),
    st.Page("pages/export.py", title="Export"),
])
page.run()
# drawn after the page so that a model loaded on this run is already the one shown
explorer_ui.render_sidebar()
# again after a page imported what it needed lazily (a sweep imports a few hundred modules); a no-op otherwise
runtime.freeze_long_lived_objects()
