"""Model & data: pick a built-in model or upload one, pick the bundled digits or upload an .npz, and see what
was loaded: layers, parameters, FLOPs, dense accuracy, device, data splits, channel groups."""

import pandas as pd
import streamlit as st

import explorer_ui as ui
from pruning_core import GroupError

ui.require_session()
st.title("Model & data")
LIMIT_HELP = (f"Up to {ui.upload_limit_mb()} MB per file (`server.maxUploadSize`); a larger file is refused before "
              "it is sent. Every uploaded file is treated as untrusted.")


def upload_status(field: str, file) -> None:
    """Under an uploader: the file the server actually holds (what Load will use), or the file just refused."""
    if refused := ui.refused_upload(field):
        st.error(refused.message(), icon="⚠️")
    elif file is not None:
        st.caption(f"Load will use **{ui.plain(file.name)}** ({ui.fmt_bytes(file.size)}).")


def chosen_file(field: str, file, missing: str):
    """The uploaded file Load uses; a refused file is named rather than silently replaced by an earlier one."""
    if file is not None:
        return file
    error = ui.ModelLoadError if field == "model" else ui.DataError
    refused = ui.refused_upload(field)
    raise error(refused.message() if refused else missing)


model_col, data_col = st.columns(2)

with model_col:
    st.subheader("Model")
    source = st.radio("Model source", ["Built-in", "Upload a file"], horizontal=True,
                      **ui.keep("md_model_source", "Built-in"))
    if source == "Built-in":
        builtin = st.selectbox("Architecture", ui.ARCHITECTURE_CHOICES, format_func=ui.architecture_title,
                               **ui.keep("md_builtin", ui.DEMO_MODEL))
    else:
        model_file = st.file_uploader("Model file: TorchScript, torch.export (.pt2), state_dict (.pt/.pth) "
                                      "or .safetensors", key=ui.uploader_key(ui.MODEL_DATA_UPLOADERS["model"][0]),
                                      on_change=ui.forget_refused, args=("model",), help=LIMIT_HELP)
        upload_status("model", model_file)
        arch = st.selectbox("Architecture the weights belong to (state_dict and safetensors only)",
                            ["", *ui.ARCHITECTURE_CHOICES],
                            format_func=lambda a: ui.ARCHITECTURES[a].title if a else
                            "(not needed for TorchScript, .pt2 or a pickled module)", **ui.keep("md_arch", ""))
        trust = st.checkbox("I trust this file: allow loading a pickled whole module (runs code from the file)",
                            **ui.keep("md_trust", False))

with data_col:
    st.subheader("Data")
    data_source = st.radio("Dataset", ["Bundled digits", "Upload .npz"], horizontal=True,
                           **ui.keep("md_data_source", "Bundled digits"))
    if data_source == "Upload .npz":
        data_file = st.file_uploader("An .npz with arrays X (N, ...) and y (N,) of integer labels",
                                     type=["npz"], key=ui.uploader_key(ui.MODEL_DATA_UPLOADERS["data"][0]),
                                     on_change=ui.forget_refused, args=("data",), help=LIMIT_HELP)
        upload_status("data", data_file)
    else:
        st.caption("scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes: fits the digits models.")

if st.button("Load model and data", type="primary"):
    try:
        if source == "Built-in":
            model_src = ui.ModelSource(builtin=builtin)
        else:
            model_file = chosen_file("model", model_file, "Choose a model file to upload first.")
            model_src = ui.ModelSource(data=model_file.getvalue(), filename=model_file.name,
                                       architecture=arch or None, trust_pickle=trust)
        if data_source == "Bundled digits":
            data_src = ui.DataSource()
        else:
            data_file = chosen_file("data", data_file, "Choose an .npz file to upload first.")
            data_src = ui.DataSource(data=data_file.getvalue(), filename=data_file.name)
        with st.spinner("Loading and checking the model on the data…"):
            loaded = ui.open_workbench(model_src, data_src)
        ui.forget_refused()
        st.success(f"Loaded {ui.plain(loaded.model.name)} on {ui.plain(loaded.data.name)}.")
    except Exception as e:  # every failure keeps the previous model and data
        ui.show_error(e, "Nothing was changed")

st.divider()
state = ui.state()
wb, info, data = state.workbench, state.model, state.data
dense = wb.dense_metrics()
st.subheader(f"{ui.plain(info.name)} on {ui.plain(data.name)}")
for note in info.notes:
    st.info(note)
cols = st.columns(5)
cols[0].metric("Parameters", ui.fmt_count(wb.dense_params), help=f"{wb.dense_params:,} parameters")
cols[1].metric("FLOPs per sample", ui.fmt_count(wb.dense_flops[0]),
               help="Multiply-adds x2 of convolutions and matrix products, batch 1 (torch.utils.flop_counter).")
if wb.task.kind == "classification":
    cols[2].metric("Dense accuracy", f"{dense.accuracy:.2%}")
    cols[3].metric("Dense loss", f"{dense.loss:.4f}")
else:
    cols[2].metric("Task", {"unlabelled": "classes, no labels", "embedding": "embeddings"}[wb.task.kind],
                   help=wb.task.description)
    cols[3].metric("Outputs per sample", f"{wb.dense_outputs.shape[1]:,}")
cols[4].metric("Device", str(wb.device))
if wb.task.kind != "classification":
    st.info(f"This data has no labels, so every figure is measured against the dense model's own outputs "
            f"({wb.task.description}); the headline is {wb.task.metric(wb.task.primary).label}. Calibration "
            f"targets: {wb.calib_targets}.")
st.caption(f"Data: {data.evaluation:,} evaluation samples (every accuracy shown), {data.calibration:,} "
           f"calibration samples (for methods that look at activations or gradients) · sample shape "
           f"{'x'.join(map(str, data.sample_shape))} · {data.classes} classes.")

layers_col, groups_col = st.columns([3, 2])
with layers_col:
    st.markdown("**Layers with parameters**")
    table = wb.layer_table()
    counts = {c: st.column_config.NumberColumn(format="localized") for c in ("parameters", "FLOPs")}
    st.dataframe(table, hide_index=True, width="stretch", height=min(700, 40 + 35 * len(table)),
                 column_config=counts)
with groups_col:
    st.markdown("**Channel groups** (what structured methods prune together)")
    try:
        groups = wb.groups
        st.dataframe(pd.DataFrame([{"group": g.name, "channels": g.size, "producers": ", ".join(g.producers),
                                    "consumers": ", ".join(g.consumers)} for g in groups.groups]),
                     hide_index=True, width="stretch")
        st.caption(f"Never shrunk (model output): {', '.join(groups.ignored) or 'none'}."
                   + "".join(f" Skipped {n}: {r}." for n, r in groups.skipped))
    except GroupError as e:
        st.warning(f"Structured methods are unavailable for this model: {e} Unstructured methods still work.")

# last, so that its (empty) element adds no gap above the page's content
ui.watch_uploads(ui.MODEL_DATA_UPLOADERS)
