"""Every dashboard chart drawn by plotly.js in headless Chromium: the legend overlaps neither
the x-axis titles nor the tick labels (the memory chart's "GB" title sat under its legend).

Each figure is written to a standalone HTML page (plotly.js inline, no server), Chromium
dumps the page after a script in it has measured the drawn boxes. Chromium must be installed
(``.ci/system-packages``); without it the test fails, it never skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

import sim
from dashboard import breakdown, charts

# plotly.js draws a figure, then grows its margins for a wrapped legend and draws it again;
# on a busy machine the second drawing may come late, so the boxes are read until they have
# stayed the same for four readings in a row (at most 60), not once after a fixed delay.
MEASURE_JS = """<pre id="boxes"></pre><script>
const box = e => { const r = e.getBoundingClientRect();
                   return [r.left, r.top, r.right, r.bottom]; };
const all = (root, sel) => [...root.querySelectorAll(sel)].map(box)
                             .filter(b => b[2] > b[0] && b[3] > b[1]);
function measure() {
  const out = {};
  for (const fig of document.querySelectorAll('.figure')) {
    out[fig.id] = {legend: all(fig, '.legend .bg'),
                   xtitles: all(fig, 'text[class^="x"][class$="title"]'),
                   xticks: all(fig, 'g[class^="x"][class$="tick"] text')};
  }
  return JSON.stringify(out);
}
let last = null, same = 0, readings = 0;
function settle() {
  const now = measure();
  same = now === last ? same + 1 : 0;
  last = now;
  readings += 1;
  if (same >= 4 || readings >= 60) document.getElementById('boxes').textContent = now;
  else setTimeout(settle, 100);
}
setTimeout(settle, 500);
</script>"""
WIDTHS = (700, 420)  # a wide and a narrow column: the legend wraps in the narrow one


def drawn_boxes(figures: dict, width: int, tmp_path) -> dict:
    """Per figure: the legend, x-axis titles and tick labels as plotly.js drew them (CSS
    pixels), every figure on one page ``width`` pixels wide."""
    import plotly.offline

    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome")) if p), None)
    assert chromium, "no Chromium on PATH: apt-get install chromium (.ci/system-packages)"
    divs = "".join(f'<div class="figure" id="f{i}">'
                   + fig.to_html(include_plotlyjs=False, full_html=False,
                                 default_width=f"{width}px") + "</div>"
                   for i, fig in enumerate(figures.values()))
    page = tmp_path / f"figures-{width}.html"
    page.write_text(f"<html><head><meta charset='utf-8'><script>"
                    f"{plotly.offline.get_plotlyjs()}</script></head>"
                    f"<body>{divs}{MEASURE_JS}</body></html>")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=300).stdout
    boxes = json.loads(dom.split('<pre id="boxes">')[1].split("</pre>")[0])
    return {name: boxes[f"f{i}"] for i, name in enumerate(figures)}


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.fixture(scope="module")
def figures() -> dict:
    result = sim.simulate({"workload": {"num_requests": 40, "rate": 8.0}})
    req, steps = result.requests, result.steps
    seqs = breakdown.typical_steps(steps, 16)["typical decode step"]
    operators = pd.concat([breakdown.operator_rows(label, breakdown.hardware_of(result.config),
                                                   seqs) for label in "AB"])
    memory = pd.concat([breakdown.memory_rows(label, result.plan, steps) for label in "AB"])
    sweep = pd.DataFrame({"config": ["A", "A", "B", "B"], "load": [1.0, 2.0, 1.0, 2.0],
                          "output_throughput": [10.0, 20.0, 12.0, 22.0],
                          "p99_ttft_ms": [5.0, 9.0, 6.0, 8.0], "median_tpot_ms": [3, 4, 3, 5]})
    costs = pd.DataFrame({"config": ["A", "B"] * 2, "tokens": ["output"] * 2 + ["all"] * 2,
                          "usd_per_m": [1.0, 0.5, 0.3, 0.2]})
    return {
        "memory": charts.memory_breakdown(memory),
        "operators": charts.operator_breakdown(operators),
        "latency CDFs": charts.latency_cdfs({"A": req, "B": req}),
        "KV and queue": charts.kv_and_queue({"A": steps, "B": steps}),
        "batch composition": charts.batch_composition({"A": steps, "B": steps}),
        "load sweep": charts.throughput_latency(sweep),
        "cost": charts.cost_chart(costs),
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_the_legend_clears_the_x_axis_labels(figures, width, tmp_path):
    for name, boxes in drawn_boxes(figures, width, tmp_path).items():
        assert boxes["legend"] and boxes["xticks"], (name, width, boxes)
        labels = boxes["xtitles"] + boxes["xticks"]
        clashes = [(lg, lb) for lg in boxes["legend"] for lb in labels if _overlap(lg, lb)]
        assert not clashes, (name, width, clashes)
