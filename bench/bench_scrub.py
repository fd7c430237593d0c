"""Live ratio scrub: from a key press on the Sweep screen's ratio slider to the page having finished its rerun
with every chart showing the new ratio, measured in a real browser next to Streamlit's own floor.

Both apps are served the README's way (``python -m streamlit run`` with the flags of scripts/run_app.sh, on free
loopback ports) and driven in one headless Debian Chromium (never a browser Playwright downloads):

  * ours: the demo (digits-resnet on the bundled digits); on the Sweep screen a sweep of magnitude-global and
    group-l1 over the ten ratios 0, 0.1, ..., 0.9 runs first, then the ratio select_slider is scrubbed;
  * the floor: a script written to a temporary folder, a ``st.fragment`` holding a select_slider over ten
    ratios, one ``st.metric`` and one ``st.plotly_chart`` whose marker moves; the least any Streamlit page
    with a slider, a metric and a chart can do per move.

Each press (ArrowRight or ArrowLeft, walking the slider end to end and back, so that every ratio is visited)
is timed in the page's own clock: from the ``keydown`` event to the first moment at which the app's script
state is back to ``notRunning``, every plotly chart shows the new ratio (its ``r = ...`` label; a chart with no
such label must have redrawn and held still for a frame) and a metric names the new ratio. The two apps'
presses are interleaved in rounds, the order alternating, so machine noise falls on both alike.

Where the time goes, per press:
  * input: keydown to the rerun request leaving the page (its websocket ``send``);
  * server: the request to the script's start, the script body, and Streamlit's work after the body
    (session-state clean-up and the full garbage collection of ``runner.postScriptGC``), logged by a
    ``sitecustomize`` hook put first on the servers' PYTHONPATH, so the command line stays the README's;
  * browser: the server's run ended to every chart updated; and the page's long tasks (> 50 ms);
  * bytes: the websocket frames the page received, read through the DevTools protocol and decoded as
    Streamlit ``ForwardMsg`` protobufs, by element type.

Run from the repository root (Chromium at /usr/bin/chromium; see bench/README.md):
    .venv/bin/python bench/bench_scrub.py --presses 30 --json bench/results/scrub.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the flags of scripts/run_app.sh, served on loopback
SERVER_FLAGS = ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SWEEP_METHODS = ("magnitude-global", "group-l1")  # the Sweep screen's default choice, over its default grid
TARGET_MS, TARGET_RATIO = 300.0, 3.0

FLOOR_APP = '''
"""Streamlit's floor for a scrub: a fragment with a select_slider, one metric and one plotly chart."""
import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="Scrub floor", page_icon="✂️", layout="wide")
RATIOS = [round(0.1 * i, 1) for i in range(10)]
ACCURACY = [0.99 - 0.8 * r ** 3 for r in RATIOS]


@st.fragment
def scrub():
    ratio = st.select_slider("Pruning ratio", RATIOS, value=0.5, format_func=lambda r: f"{r:.2f}")
    accuracy = ACCURACY[RATIOS.index(ratio)]
    st.metric(f"Accuracy at ratio {ratio:.2f}", f"{accuracy:.2%}")
    fig = go.Figure(go.Scatter(x=RATIOS, y=ACCURACY, mode="lines+markers", name="accuracy"))
    fig.add_trace(go.Scatter(x=[ratio], y=[accuracy], mode="markers", marker=dict(size=14), name="selected"))
    fig.add_vline(x=ratio, line=dict(dash="dot"), annotation_text=f"r = {ratio:.2f}")
    st.plotly_chart(fig, key="curve")


scrub()
'''

# Written as sitecustomize.py into a temporary folder put first on the servers' PYTHONPATH: the command line
# stays the README's, and each script run (full or fragment) logs when its body ran and when Streamlit's
# after-run work (session-state cleanup, the garbage collection it runs after every run) ended, in epoch ms.
SERVER_HOOK = '''
import os
import time

_LOG = os.environ.get("SCRUB_RUN_LOG")
if _LOG:
    from streamlit.runtime.scriptrunner import script_runner as runner_module

    _exec, _finished = runner_module.exec_func_with_error_handling, runner_module.ScriptRunner._on_script_finished
    _last = {}

    def _timed_exec(func, ctx):
        start = time.time()
        try:
            return _exec(func, ctx)
        finally:
            _last["exec"] = (start, time.time())

    def _timed_finished(self, *args, **kwargs):
        try:
            return _finished(self, *args, **kwargs)
        finally:
            start, end = _last.pop("exec", (time.time(), time.time()))
            with open(_LOG, "a") as log:
                log.write(f"{start * 1000:.3f} {end * 1000:.3f} {time.time() * 1000:.3f}\\n")

    runner_module.exec_func_with_error_handling = _timed_exec
    runner_module.ScriptRunner._on_script_finished = _timed_finished
'''

# Installed before any page script runs: notes when the page sends on its websocket (to line the page's clock up
# with the network's), the last keydown and main-thread long tasks, and offers a promise that resolves once a
# ratio is fully shown.
INIT_JS = r"""
(() => {
  const S = window.__scrub = {sent: [], keydown: null, longtasks: []};
  const nativeSend = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    S.sent.push(performance.now());
    return nativeSend.call(this, data);
  };
  document.addEventListener('keydown', () => { S.keydown = performance.now(); }, true);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) S.longtasks.push({t: e.startTime, d: e.duration});
    }).observe({type: 'longtask', buffered: true});
  } catch (e) {}

  const charts = () => [...document.querySelectorAll("[data-testid='stPlotlyChart']")];
  const ratiosIn = (text, pattern) => [...text.matchAll(pattern)].map((m) => parseFloat(m[1]));
  const shows = (text, pattern, r) => ratiosIn(text, pattern).some((v) => Math.abs(v - r) < 1e-9);
  const chartRatio = /r = (\d+(?:\.\d+)?)/g;
  const metricRatio = /ratio (\d+(?:\.\d+)?)/g;

  // snapshot the page, then resolve once the rerun for `ratio` has finished and everything shows it
  S.arm = (ratio, timeoutMs) => {
    S.keydown = null;
    S.sent = []; S.longtasks = [];
    const before = charts().map((c) => ({labelled: ratiosIn(c.textContent, chartRatio).length > 0,
                                         svg: c.querySelector('.main-svg')?.outerHTML ?? ''}));
    S.nCharts = before.length;
    let lastUnlabelled = null;
    const check = () => {
      if (document.querySelector("[data-testid='stException']")) throw new Error('the app shows an exception');
      const app = document.querySelector("[data-testid='stApp']");
      if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return (S.why = 'running', false);
      const now = charts();
      if (now.length !== before.length) return (S.why = 'chart count', false);
      const unlabelled = [];
      for (let i = 0; i < now.length; i++) {
        const text = now[i].textContent;
        if (ratiosIn(text, chartRatio).length) {
          if (!shows(text, chartRatio, ratio)) return (S.why = `chart ${i} shows another ratio`, false);
        } else if (before[i].labelled) {
          return (S.why = `chart ${i} is being redrawn`, false);
        } else {
          const svg = now[i].querySelector('.main-svg')?.outerHTML ?? '';
          if (!svg || svg === before[i].svg) return (S.why = `chart ${i} has not redrawn`, false);
          unlabelled.push(svg);
        }
      }
      const metrics = [...document.querySelectorAll("[data-testid='stMetricLabel']")].map((e) => e.textContent);
      if (!metrics.some((m) => shows(m, metricRatio, ratio))) return (S.why = 'metric', false);
      // a chart without a ratio label counts as updated once it has redrawn and held still between two checks
      const key = unlabelled.join('\u0000');
      if (unlabelled.length && key !== lastUnlabelled) {
        lastUnlabelled = key;
        requestAnimationFrame(() => S.attempt && S.attempt('frame'));  // look again at the next frame
        return (S.why = 'settling', false);
      }
      return true;
    };
    S.done = new Promise((resolve, reject) => {
      let finished = false;
      const stop = () => { finished = true; observer.disconnect(); clearInterval(poll); };
      const attempt = (via) => {
        if (finished || S.keydown === null) return;
        try {
          if (check()) { stop(); resolve({t_key: S.keydown, t_done: performance.now(), via}); }
        } catch (e) { stop(); reject(e); }
      };
      // checked after every change to the page; a slow poll as well, should a page settle without a last change
      // (a fast one would take the page's own time: each check reads every chart's text)
      S.attempt = attempt;
      const observer = new MutationObserver(() => attempt('change'));
      observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
      const poll = setInterval(() => attempt('poll'), 50);
      setTimeout(() => { if (!finished) { stop();
        reject(new Error(`ratio ${ratio} not shown within ${timeoutMs} ms (${S.why})`)); } }, timeoutMs);
    });
    return before.length;
  };

  S.describe = () => ({
    state: document.querySelector("[data-testid='stApp']")?.getAttribute('data-test-script-state'),
    slider: [...document.querySelectorAll("input[type='range']")].map((e) => e.getAttribute('aria-valuetext')),
    charts: charts().map((c) => ratiosIn(c.textContent, chartRatio)), why: S.why,
    metrics: [...document.querySelectorAll("[data-testid='stMetricLabel']")].map((e) => e.textContent),
    keydown: S.keydown});
  S.report = (from, to) => ({sent: S.sent.filter((t) => t >= from && t <= to),
                              longtasks: S.longtasks.filter((e) => e.t + e.d >= from && e.t <= to)});
})();
"""


# ----- servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m streamlit run script`` with run_app.sh's flags on a free loopback port, its script runs
    timed by the hook (``runs()``: [(body start, body end, after-run end)] in epoch ms, in order)."""

    def __init__(self, name: str, script: Path, cwd: Path, folder: Path):
        self.name, self.script, self.cwd = name, script, cwd
        self.log_path, self.runs_path = folder / f"{name}.log", folder / f"{name}.runs"
        hook_dir = folder / "hook"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "sitecustomize.py").write_text(SERVER_HOOK)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "SCRUB_RUN_LOG": str(self.runs_path),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))}

    def __enter__(self) -> str:
        self.runs_path.write_text("")
        port = free_port()
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(self.script), "--server.address", "127.0.0.1",
             "--server.port", str(port), *SERVER_FLAGS],
            cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    return url
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.name}: the server did not come up; see {self.log_path}")
            time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def runs(self) -> list[tuple[float, float, float]]:
        return [tuple(map(float, line.split())) for line in self.runs_path.read_text().splitlines() if line]


# every chart on the page has been drawn by plotly
DRAWN_JS = """() => [...document.querySelectorAll("[data-testid='stPlotlyChart']")]
                   .every((c) => c.querySelector('.main-svg'))"""

# ----- driving a page --------------------------------------------------------------------------------------


def wait_for_run(page, timeout_ms: float = 120_000) -> None:
    """Wait for the rerun the last interaction started (streamlit's own e2e recipe)."""
    page.wait_for_timeout(300)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=timeout_ms)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=timeout_ms)


class ScrubTarget:
    """One app in its own browser context, at the point where its ratio slider can be scrubbed."""

    def __init__(self, server: Server, browser, url: str):
        self.name, self.server = server.name, server
        self.context = browser.new_context(viewport={"width": 1400, "height": 1500})
        self.context.add_init_script(INIT_JS)
        self.page = self.context.new_page()
        # the payloads of the websocket frames the page receives, in order (for their sizes and types)
        self.frames: list[str] = []
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.on("Network.webSocketFrameReceived", lambda e: self.frames.append(e["response"]["payloadData"]))
        self.cdp.send("Network.enable")
        self.page.goto(url)
        wait_for_run(self.page)
        self.time_origin = self.page.evaluate("() => performance.timeOrigin")  # epoch ms of the page clock's 0
        self.records: list[dict] = []

    def find_slider(self) -> None:
        slider = self.page.get_by_role("slider").last
        slider.wait_for(timeout=120_000)
        self.slider = slider
        # a select_slider is a range input over the options' positions; its text is the formatted option
        self.n_options = int(slider.get_attribute("max")) + 1
        self.index = int(slider.input_value())
        self.step = 1
        self.ratios = [round(0.1 * i, 1) for i in range(self.n_options)]  # both apps scrub 0, 0.1, ..., 0.9
        self.visited = {self.ratios[self.index]}
        if abs(float(slider.get_attribute("aria-valuetext")) - self.ratios[self.index]) > 1e-9:
            raise RuntimeError(f"{self.name}: the slider does not scrub the ratios 0, 0.1, ..., 0.9")
        self.page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=120_000)
        self.page.wait_for_function(DRAWN_JS, timeout=120_000)
        self.n_charts = self.page.get_by_test_id("stPlotlyChart").count()
        if not self.n_charts:
            raise RuntimeError(f"{self.name}: no chart on the page")

    def press(self, timeout_ms: float = 60_000) -> dict:
        """Move one step along the slider (bouncing at the ends) and time it; returns the record."""
        if not 0 <= self.index + self.step < self.n_options:
            self.step = -self.step
        key = "ArrowRight" if self.step > 0 else "ArrowLeft"
        self.index += self.step
        ratio = self.ratios[self.index]
        self.slider.focus()
        self.page.wait_for_function(DRAWN_JS, timeout=timeout_ms)  # the last press's charts are all drawn
        n_charts = self.page.evaluate("([r, t]) => window.__scrub.arm(r, t)", [ratio, timeout_ms])
        n_frames, n_runs = len(self.frames), len(self.server.runs())
        self.page.keyboard.press(key)
        try:
            timing = self.page.evaluate("() => window.__scrub.done")
        except Exception as e:
            raise RuntimeError(f"{self.name}, {key} to ratio {ratio}: {e}; the page shows "
                               f"{self.page.evaluate('() => window.__scrub.describe()')}") from None
        page_side = self.page.evaluate("([a, b]) => window.__scrub.report(a, b)", [timing["t_key"], timing["t_done"]])
        deadline = time.time() + 10  # the server notes a run just after its last message: wait for the note
        while len(self.server.runs()) <= n_runs and time.time() < deadline:
            time.sleep(0.01)
        runs = [tuple(t - self.time_origin for t in run) for run in self.server.runs()[n_runs:]]
        if n_charts != self.n_charts:
            raise RuntimeError(f"{self.name}: {n_charts} charts on the page, {self.n_charts} at the start")
        record = {"ratio": ratio, "key": key, "charts": n_charts, "first_visit": ratio not in self.visited, **timing,
                  **analyse(timing, page_side, runs, self.frames[n_frames:])}
        self.records.append(record)
        self.visited.add(ratio)
        return record

    def close(self) -> None:
        self.context.close()


def prepare_ours(target: ScrubTarget) -> None:
    page = target.page
    page.get_by_test_id("stSidebarNav").get_by_text("Sweep", exact=True).click()
    wait_for_run(page)
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("Sweep finished").first.wait_for(timeout=600_000)
    wait_for_run(page)
    target.find_slider()
    if target.n_options != 10:
        raise RuntimeError(f"expected ten swept ratios on the slider, found {target.n_options}")


# ----- reading one press -----------------------------------------------------------------------------------


def analyse(timing: dict, page_side: dict, runs: list[tuple[float, float, float]], frames: list[str]) -> dict:
    """Split one press into input, server and browser time, and count what the server sent by element type.

    ``runs``: the server's script runs since the press (body start, body end, after-run end; page clock);
    ``frames``: the base64 payloads the page received since the press, up to its ``script_finished``."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    t_key, t_done = timing["t_key"], timing["t_done"]
    if not page_side["sent"] or not runs:
        raise RuntimeError("the press sent no rerun request, or the server ran no script")
    t_sent = page_side["sent"][0]
    start, body_end, run_end = runs[0][0], runs[-1][1], runs[-1][2]
    by_type: dict[str, int] = {}
    size = count = 0
    status = None
    for payload in frames:
        data = base64.b64decode(payload)
        msg = ForwardMsg()
        msg.ParseFromString(data)
        kind = msg.WhichOneof("type") or "other"
        if kind == "delta":
            kind = msg.delta.WhichOneof("type")
            if kind == "new_element":
                kind = msg.delta.new_element.WhichOneof("type")
        by_type[kind] = by_type.get(kind, 0) + len(data)
        size, count = size + len(data), count + 1
        if msg.WhichOneof("type") == "script_finished":
            status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
            break
    long_ms = sum(min(e["t"] + e["d"], t_done) - max(e["t"], t_key) for e in page_side["longtasks"])
    return {"total_ms": t_done - t_key, "input_ms": t_sent - t_key, "queue_ms": start - t_sent,
            "script_ms": body_end - start, "after_run_ms": run_end - body_end, "browser_ms": t_done - run_end,
            "long_tasks_ms": long_ms, "runs": len(runs), "bytes": size, "messages": count, "finished": status,
            "bytes_by_type": by_type}


# ----- report ----------------------------------------------------------------------------------------------

PARTS = (("input: keydown -> rerun request sent (browser)", "input_ms", "{:.0f} ms"),
         ("request -> script starts (server)", "queue_ms", "{:.0f} ms"),
         ("script body (server)", "script_ms", "{:.0f} ms"),
         ("after the body: Streamlit's clean-up and garbage collection (server)", "after_run_ms", "{:.0f} ms"),
         ("server done -> every chart updated (browser)", "browser_ms", "{:.0f} ms"),
         ("main-thread long tasks inside the press (browser)", "long_tasks_ms", "{:.0f} ms"),
         ("bytes received per rerun", "bytes", "{:,.0f}"),
         ("messages received per rerun", "messages", "{:.0f}"))


def q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * (len(s) - 1))))]


def summary(records: list[dict]) -> dict:
    out = {k: {"median": statistics.median(r[k] for r in records), "p90": q([r[k] for r in records], 0.9)}
           for k in ("total_ms", *(k for _, k, _ in PARTS))}
    kinds = sorted({k for r in records for k in r["bytes_by_type"]},
                   key=lambda k: -sum(r["bytes_by_type"].get(k, 0) for r in records))
    out["bytes_by_type"] = {k: statistics.median(r["bytes_by_type"].get(k, 0) for r in records) for k in kinds}
    out["finished"] = sorted({str(r["finished"]) for r in records})
    for name, group in (("first_visits", [r for r in records if r["first_visit"]]),
                        ("revisits", [r for r in records if not r["first_visit"]])):
        out[name] = {"presses": len(group), "median_ms": statistics.median(r["total_ms"] for r in group)
                     if group else None}
    out["decided_by_poll"] = sum(r.get("via") == "poll" for r in records)
    out["decided_a_frame_later"] = sum(r.get("via") == "frame" for r in records)
    return out


def print_report(ours: dict, floor: dict, presses: int) -> bool:
    om, fm = ours["total_ms"]["median"], floor["total_ms"]["median"]
    ratio = om / fm
    ok_abs, ok_rel = om <= TARGET_MS, ratio <= TARGET_RATIO
    print(f"\nLive ratio scrub: key press -> rerun finished and every chart updated ({presses} presses each, "
          "interleaved)\n")
    print("| measurement | ours | floor | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| median | {om:.0f} ms | {fm:.0f} ms | {ratio:.1f}x | <= {TARGET_MS:.0f} ms: "
          f"{'PASS' if ok_abs else 'FAIL'}; <= {TARGET_RATIO:.0f}x floor: {'PASS' if ok_rel else 'FAIL'} |")
    print(f"| p90 | {ours['total_ms']['p90']:.0f} ms | {floor['total_ms']['p90']:.0f} ms | "
          f"{ours['total_ms']['p90'] / floor['total_ms']['p90']:.1f}x | shown |")
    for app, summ in (("ours", ours), ("floor", floor)):
        first, again = summ["first_visits"], summ["revisits"]
        print(f"{app}: median {first['median_ms'] or 0:.0f} ms over {first['presses']} presses to a ratio not shown "
              f"before in this session, {again['median_ms'] or 0:.0f} ms over {again['presses']} back to one shown")
    print("\nWhere the time goes (medians per press; the parts need not add up to the median total)\n")
    print("| part | ours | floor |")
    print("|---|---|---|")
    for label, k, fmt in PARTS:
        print(f"| {label} | {fmt.format(ours[k]['median'])} | {fmt.format(floor[k]['median'])} |")
    print(f"\nRuns: ours {', '.join(ours['finished'])}; floor {', '.join(floor['finished'])}. Presses whose end "
          f"was seen by the 50 ms poll rather than on a page change: ours {ours['decided_by_poll']}, "
          f"floor {floor['decided_by_poll']}; a frame after a chart without a ratio label redrew: ours "
          f"{ours['decided_a_frame_later']}, floor {floor['decided_a_frame_later']}.")
    print("Bytes per rerun by message / element type (median), ours: "
          + ", ".join(f"{k} {v:,.0f}" for k, v in ours["bytes_by_type"].items() if v))
    return ok_abs and ok_rel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Slider press -> every chart updated, ours next to Streamlit's floor.")
    ap.add_argument("--presses", type=int, default=30, help="timed presses per app (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed presses per app first (default 2)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write every press as JSON")
    ap.add_argument("--logs", type=Path, default=None, help="keep the servers' logs in this folder")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        print("Debian's Chromium is needed at /usr/bin/chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-scrub-") as tmp:
        tmp = Path(tmp)
        folder = args.logs or tmp
        folder.mkdir(parents=True, exist_ok=True)
        floor_script = tmp / "floor_app.py"
        floor_script.write_text(textwrap.dedent(FLOOR_APP))
        ours_server = Server("ours", ROOT / "app.py", ROOT, folder)
        floor_server = Server("floor", floor_script, tmp, folder)
        with ours_server as ours_url, floor_server as floor_url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            print(f"python {platform.python_version()}, {os.cpu_count()} cores, Chromium {browser.version}")
            ours = ScrubTarget(ours_server, browser, ours_url)
            start = time.perf_counter()
            prepare_ours(ours)
            print(f"ours: a sweep of {' + '.join(SWEEP_METHODS)} x 10 ratios, shown in "
                  f"{time.perf_counter() - start:.1f} s; {ours.page.get_by_test_id('stPlotlyChart').count()} charts")
            floor = ScrubTarget(floor_server, browser, floor_url)
            floor.find_slider()
            for target in (ours, floor):
                for _ in range(args.warmup):
                    target.press()
                target.records.clear()
            for i in range(args.presses):
                for target in ((ours, floor) if i % 2 == 0 else (floor, ours)):
                    target.press()
            ours_summary, floor_summary = summary(ours.records), summary(floor.records)
            ours.close()
            floor.close()
            browser.close()
    ok = print_report(ours_summary, floor_summary, args.presses)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "presses": args.presses, "warmup": args.warmup, "cores": os.cpu_count(),
            "target_ms": TARGET_MS, "target_ratio": TARGET_RATIO, "pass": ok,
            "ours": {"summary": ours_summary, "presses": ours.records},
            "floor": {"summary": floor_summary, "presses": floor.records}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
