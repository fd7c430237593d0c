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
encoder = hasattr(wb.model, "bert") and hasattr(wb.model, "tokenizer")  # a Hugging Face sentence encoder
extra = [f for f in FORMATS if f != "state_dict" and (f != "hf-folder" or encoder)]
formats = st.multiselect("Formats besides the safetensors weights and plan.json (always included)", extra,
                         **ui.keep("export_formats", ["hf-folder"] if encoder else ["torch.export", "torchscript"],
                                 options=extra),
                         help="hf-folder: a Hugging Face / sentence-transformers folder (config with the pruned "
                              "heads, safetensors weights, tokenizer) under hf_model/, reloaded to verify it")
if ratio == 0:
    st.info("Ratio 0 removes nothing: the bundle holds the dense model, useful as a baseline to compare with.")
elif ui.REGISTRY[method].granularity == "structured":
    st.caption("Structured plan: the exported tensors are physically smaller.")
else:
    st.caption("Unstructured plan: tensors keep their shapes; model_sparse.safetensors stores only the kept weights.")

if st.button("Build export", type="primary"):
    try:
        plan = ui.plan_for(method, ratio)
        with st.spinner("Exporting, reloading every file to verify it, timing dense and exported model…"):
            bundle = export_plan(wb, plan, formats=("state_dict", *formats), architecture=state.model.architecture)
        model = re.sub(r"[^\w.-]+", "-", state.model.name).strip("-")
        state.export = ui.ExportRecord(state.key, bundle, f"pruned-{model}-{method}-r{ratio:.2f}.zip")
    except Exception as e:  # ExportError, PlanError, or an exporter failing on an unusual model: page stays up
        ui.show_error(e, "Nothing was exported")

record = state.export
if record and record.workbench_key == state.key:
    bundle = record.bundle
    report, before, after = bundle.report, bundle.report["before"], bundle.report["after"]
    speed = report["speed"]
    st.subheader(f"{ui.method_label(report['method'])} at ratio {report['ratio_removed']:.2f}")
    cols = st.columns(5)
    primary = report.get("primary", "accuracy")  # the task's headline: accuracy, agreement or cosine
    label = report.get("metric_labels", {}).get(primary, primary)
    cols[0].metric({"cosine": "Cosine to dense"}.get(primary, primary.capitalize()), f"{after[primary]:.2%}",
                   f"{(after[primary] - before[primary]) * 100:+.2f} pp",
                   help=f"{label[:1].upper()}{label[1:]}, on {report['evaluation_samples']} evaluation samples; "
                   "the report lists every metric of the task")
    structured = report["granularity"] == "structured"
    # unstructured plans keep the tensors' shapes: what shrinks is the count of non-zero weights and the
    # multiply-adds a sparse kernel would do
    params = after["params"] if structured else after["params_nonzero"]
    flops = after.get("flops") if structured else after.get("flops_if_zeros_skipped")
    cols[1].metric("Parameters" if structured else "Non-zero parameters", ui.fmt_count(params),
                   f"{params / before['params'] - 1:+.1%}", delta_color="inverse")
    cols[2].metric("FLOPs" if structured else "FLOPs, zeros skipped", ui.fmt_count(flops) if flops else "n/a",
                   f"{flops / before['flops'] - 1:+.1%}" if flops else None, delta_color="inverse")
    kept = speed["flops_kept"]
    cols[3].metric("FLOPs kept", f"{kept:.1%}" if kept else "n/a",
                   f"ideal speed-up {speed['ideal_speedup']:.2f}x" if kept else None, delta_color="off",
                   help="A model that does a fraction f of the multiply-adds can at best run 1/f times faster.")
    cols[4].metric("Realised sparsity", f"{report['realised_sparsity']:.1%}")

    st.markdown(f"**Speed** on {speed['device']}, {speed['threads']} torch thread(s): dense and exported model "
                f"timed side by side, median of {speed['repeats']} interleaved rounds after {speed['warmup']} "
                "warm-up runs.")
    cols = st.columns(2 * len(speed["batches"]))
    for i, (b, r) in enumerate(speed["batches"].items()):
        cols[2 * i].metric(f"Latency, batch {b}", f"{r['pruned']['median_ms']:.3g} ms",
                           f"{r['pruned']['median_ms'] - r['dense']['median_ms']:+.3g} ms "
                           f"(dense {r['dense']['median_ms']:.3g} ms)", delta_color="inverse")
        ideal = f" of ideal {speed['ideal_speedup']:.2f}x" if speed["ideal_speedup"] else ""
        cols[2 * i + 1].metric(f"Speed-up, batch {b}", f"{r['speedup']:.2f}x",
                               f"{r['efficiency']:.0%}{ideal}" if r["efficiency"] is not None else None,
                               delta_color="off", help=f"Median over the rounds of dense time / exported time; p10-p90 "
                               f"{r['speedup_p10']:.2f}x-{r['speedup_p90']:.2f}x.")
    if speed["warning"]:
        st.warning(speed["warning"], icon=":material/speed:")
    v = report["verification"]
    top1 = "" if v.get("top1_agreement") is None else f", top-1 agreement {v['top1_agreement']:.2%}"
    st.success(f"Verified: the exported model reproduces the {v['reference']} on {v['samples']} samples "
               f"(max |difference| {v['max_abs_difference']:.2g}{top1}); every file below was loaded back and "
               "checked.")
    def size(name: str) -> int:  # a folder (the Hugging Face one): its files together
        return bundle.files.get(name) or sum(n for f, n in bundle.files.items() if f.startswith(name.rstrip("/") + "/"))

    rows = [{"file": o["file"], "format": fmt, "size": size(o["file"]),
             "status": "verified by reloading" if o["status"] == "ok" else f"left out: {o['error']}"}
            for fmt, o in report["formats"].items()]
    rows += [{"file": n, "format": "", "size": s, "status": ""} for n, s in bundle.files.items()
             if n.endswith((".json", ".md"))]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"size": st.column_config.NumberColumn("size (bytes)", format="localized")})
    for o in report["formats"].values():
        if "check" in o:
            c = o["check"]
            top1 = "" if c.get("top1_agreement") is None else f", top-1 agreement {c['top1_agreement']:.2%}"
            st.caption(f"{o['file']} run in {c['runtime']} on {c['samples']} evaluation samples against torch: max "
                       f"|difference| {c['max_abs_difference']:.2g}{top1}" + (f" ({c['note']})." if c.get("note")
                                                                              else "."))
    for note in report["notes"]:
        st.caption(note)
    st.download_button(f"Download {record.file_name} ({len(bundle.zip_bytes) / 1024:,.0f} KiB)",
                       bundle.zip_bytes, file_name=record.file_name, mime="application/zip",
                       on_click="ignore", type="primary")
    with st.expander("report.md"):
        st.markdown(format_report(report))
