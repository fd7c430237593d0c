"""Export: the chosen plan as a physically smaller (structured) or compressed (unstructured) model, verified by
reloading every file, with a report of what it measured before and after, as one zip to download."""

import re

import pandas as pd
import streamlit as st

import explorer_ui as ui
from pruning_core.export import FORMATS, export_plan, format_report

ui.require_session()
st.title("Export")
state = ui.state()
wb = state.workbench
method, ratio = ui.plan_picker()
extra = [f for f in FORMATS if f != "state_dict"]
formats = st.multiselect("Formats besides the safetensors weights and plan.json (always included)", extra,
                         **ui.keep("export_formats", ["torch.export", "torchscript"], options=extra))
if ratio == 0:
    st.info("Ratio 0 removes nothing: the bundle holds the dense model, useful as a baseline to compare with.")
elif ui.REGISTRY[method].granularity == "structured":
    st.caption("Structured plan: the exported tensors are physically smaller.")
else:
    st.caption("Unstructured plan: tensors keep their shapes; model_sparse.safetensors stores only the kept weights.")

if st.button("Build export", type="primary"):
    try:
        plan = ui.plan_for(method, ratio)
        with st.spinner("Exporting, reloading every file to verify it, measuring latency…"):
            bundle = export_plan(wb, plan, formats=("state_dict", *formats), architecture=state.model.architecture)
        model = re.sub(r"[^\w.-]+", "-", state.model.name).strip("-")
        state.export = ui.ExportRecord(state.key, bundle, f"pruned-{model}-{method}-r{ratio:.2f}.zip")
    except Exception as e:  # ExportError, PlanError, or an exporter failing on an unusual model: page stays up
        ui.show_error(e, "Nothing was exported")

record = state.export
if record and record.workbench_key == state.key:
    bundle = record.bundle
    report, before, after = bundle.report, bundle.report["before"], bundle.report["after"]
    st.subheader(f"{ui.method_label(report['method'])} at ratio {report['ratio_removed']:.2f}")
    cols = st.columns(5)
    cols[0].metric("Accuracy", f"{after['accuracy']:.2%}", f"{(after['accuracy'] - before['accuracy']) * 100:+.2f} pp")
    structured = report["granularity"] == "structured"
    # unstructured plans keep the tensors' shapes: what shrinks is the count of non-zero weights and the
    # multiply-adds a sparse kernel would do
    params = after["params"] if structured else after["params_nonzero"]
    flops = after.get("flops") if structured else after.get("flops_if_zeros_skipped")
    cols[1].metric("Parameters" if structured else "Non-zero parameters", ui.fmt_count(params),
                   f"{params / before['params'] - 1:+.1%}", delta_color="inverse")
    cols[2].metric("FLOPs" if structured else "FLOPs, zeros skipped", ui.fmt_count(flops) if flops else "n/a",
                   f"{flops / before['flops'] - 1:+.1%}" if flops else None, delta_color="inverse")
    cols[3].metric("Latency, batch 1", f"{after['latency_ms_batch1']:.3f} ms",
                   f"{after['latency_ms_batch1'] - before['latency_ms_batch1']:+.3f} ms", delta_color="inverse")
    cols[4].metric("Realised sparsity", f"{report['realised_sparsity']:.1%}")
    v = report["verification"]
    st.success(f"Verified: the exported model reproduces the {v['reference']} on {v['samples']} samples "
               f"(max |difference| {v['max_abs_difference']:.2g}, top-1 agreement {v['top1_agreement']:.2%}); "
               "every file below was loaded back and checked.")
    rows = [{"file": o["file"], "format": fmt, "size": bundle.files.get(o["file"]),
             "status": "verified by reloading" if o["status"] == "ok" else f"left out: {o['error']}"}
            for fmt, o in report["formats"].items()]
    rows += [{"file": n, "format": "", "size": s, "status": ""} for n, s in bundle.files.items()
             if n.endswith((".json", ".md"))]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"size": st.column_config.NumberColumn("size (bytes)", format="localized")})
    for note in report["notes"]:
        st.caption(note)
    st.download_button(f"Download {record.file_name} ({len(bundle.zip_bytes) / 1024:,.0f} KiB)",
                       bundle.zip_bytes, file_name=record.file_name, mime="application/zip",
                       on_click="ignore", type="primary")
    with st.expander("report.md"):
        st.markdown(format_report(report))
