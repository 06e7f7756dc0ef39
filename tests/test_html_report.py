"""The HTML report: its plots hold the bars the data calls for, it survives missing sections and a
missing matplotlib, and a real browser draws it."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html import unescape
from xml.etree import ElementTree

import numpy as np
import pytest

from pytest_slm import report
from pytest_slm.checks import KINDS
from pytest_slm.report import html
from pytest_slm.report.outcomes import Outcome

pytestmark = pytest.mark.slow  # make check leaves it out

MODEL = "smollm2-135m"
MIB = 2**20
# Out of ladder order on purpose: the plots must sort them.
QUANTS = {"llamacpp-cpu": ("q4_k_m", "native", "q2_k", "q8_0"), "mlx-cpu": ("mlx-q4", "native")}
TASKS = {"slm_arith:5": 0.42, "slm_facts": 0.61}  # accuracy of the native weights
DROP = {"native": 0.0, "q8_0": 0.0, "q4_k_m": 0.02, "q2_k": 0.15, "mlx-q4": 0.03}
SPEED = {"prefill@128": 850.0, "prefill@512": 1100.0, "decode": 95.0}  # tok/s of the native weights
# `spread` is a robust standard deviation relative to the median, `min` the fastest repeat's speed
SPEEDUP = {"native": 1.0, "q8_0": 1.5, "q4_k_m": 1.9, "q2_k": 2.1, "mlx-q4": 1.7}
WEIGHTS_MIB = {"native": 258, "q8_0": 138, "q4_k_m": 100}
KV_MIB_PER_TOKEN = 2 * 30 * 3 * 64 * 2 / MIB  # K and V, 30 layers, 3 KV heads of 64, f16


def _item(device, quant, suffix):
    return f"{MODEL}-{device}-{quant}-{suffix}"


def _accuracy_rows():
    rows = []
    for device, quants in QUANTS.items():
        for quant in quants:
            for task, accuracy in TASKS.items():
                verdict = "FAIL" if DROP[quant] > 0.1 else "updated" if device == "mlx-cpu" else "pass"
                rows.append(
                    {
                        "item": _item(device, quant, task),
                        "model": MODEL,
                        "device": device,
                        "quant": quant,
                        "task": task,
                        "accuracy": accuracy - DROP[quant],
                        "baseline": accuracy,
                        "delta_points": 0.0 - 100 * DROP[quant],
                        "regressed": int(100 * DROP[quant]),
                        "improved": 1,
                        "p_value": 0.002 if DROP[quant] > 0.1 else 0.4,
                        "verdict": verdict,
                    }
                )
    return rows


def _runtime_rows():
    rows = []
    for device, quants in QUANTS.items():
        for quant in quants:
            base = {"item": _item(device, quant, "latency"), "model": MODEL, "device": device, "quant": quant}
            for metric, speed in SPEED.items():
                median = speed * SPEEDUP[quant]
                rows.append(
                    dict(
                        base,
                        metric=metric,
                        unit="tok/s",
                        median=median,
                        min=1.05 * median,
                        spread=0.04,
                        baseline=median,
                        change_pct=1.2,
                        limit_pct=10.0,
                        rounds=1,
                        load=0.4,
                        verdict="pass",
                    )
                )
            rows.append(
                dict(
                    base,
                    metric="ttft@128",
                    unit="s",
                    median=0.15,
                    min=0.14,
                    spread=0.02,
                    baseline=None,
                    change_pct=None,
                    limit_pct=None,
                    rounds=1,
                    load=0.4,
                    verdict="updated",
                )
            )
    return rows


def _memory_rows():
    rows = []
    for quant, weights in WEIGHTS_MIB.items():
        kv_cache = []
        for context in (512, 2048, 8192):
            kv = KV_MIB_PER_TOKEN * context
            total = weights + kv
            kv_cache.append(
                {"context": context, "kv_bytes": int(kv * MIB), "total_bytes": int(total * MIB), "share": kv / total}
            )
        rows.append(
            {
                "item": _item("llamacpp-cpu", quant, "memory"),
                "model": MODEL,
                "device": "llamacpp-cpu",
                "quant": quant,
                "weights_bytes": weights * MIB,
                "kv_bytes_per_token": int(KV_MIB_PER_TOKEN * MIB),
                "peak_rss_bytes": None if quant == "native" else (weights + 60) * MIB,  # None: not Linux
                "kv_cache": kv_cache,
                "verdict": "pass",
            }
        )
    return rows


def _statistics(kld, agreement):
    """A distribution row's figures around a mean KL divergence and a top-1 agreement."""
    return {
        "tokens": 4096,
        "mean_kld": kld,
        "kld_stderr": kld / 30,
        "median_kld": kld / 4,
        "p90_kld": 2 * kld,
        "p95_kld": 4 * kld,
        "p99_kld": 12 * kld,
        "p999_kld": 30 * kld,
        "max_kld": 60 * kld,
        "delta_p_mean": kld / 10,
        "delta_p_rms": kld,
        "delta_p_median": 0.0,
        "delta_p_p99": 5 * kld,
        "delta_p_max": 10 * kld,
        "top1_agreement": agreement,
        "top1_low": agreement - 0.003,
        "top1_high": agreement + 0.003,
        "reference_perplexity": 14.2,
        "ppl_ratio": 1 + 3 * kld,
        "ppl_ratio_stderr": kld / 10,
    }


def _fidelity_rows():
    return [
        dict(
            item=_item("llamacpp-cpu", quant, "fidelity"),
            model=MODEL,
            device="llamacpp-cpu",
            quant=quant,
            **_statistics(kld, agreement),
            perplexity=14.2 + 40 * kld,
            verdict=verdict,
        )
        for quant, kld, agreement, verdict in (("q8_0", 0.0009, 0.991, "pass"), ("q2_k", 0.21, 0.78, "FAIL"))
    ]


RESULTS = {
    "items": _accuracy_rows(),
    "parity": [
        dict(
            item=f"{MODEL}-mlx-cpu-native-vs-llamacpp-cpu-f32",
            task_outcomes="4 tasks, 9 flips",
            **_statistics(0.0004, 0.997),
            perplexity=14.21,
            verdict="pass",
        )
    ],
    "fidelity": _fidelity_rows(),
    "runtime": _runtime_rows(),
    "memory": _memory_rows(),
    "baseline_writes": [{"path": "baselines/smollm2-135m/mlx-cpu/native/slm_facts-0shot.json", "changed": True}],
}
TABLES = {"items": "Accuracy", "parity": "Parity", "fidelity": "Fidelity", "runtime": "Runtime", "memory": "Memory"}
FIGURES = {"items": "accuracy-ladder", "runtime": "speed", "memory": "memory", "fidelity": "kld"}


@pytest.fixture
def charts():
    """The plots' module: matplotlib is the `report` extra (in `test`), and without it there are no plots."""
    pytest.importorskip("matplotlib", reason="the plots need matplotlib: pip install 'pytest-slm[report]'")
    from pytest_slm.report import charts

    return charts


def _title(figure):
    return figure.legends[0].get_title().get_text()


def _legend(figure):
    return [text.get_text() for text in figure.legends[0].get_texts()]


def _containers(axes):
    from matplotlib.container import BarContainer

    return [container for container in axes.containers if isinstance(container, BarContainer)]


def _bars(figure):
    """{(x tick, series): height} of a panel of grouped bars, whatever the slot each bar has in its group."""
    [axes] = figure.axes
    ticks = [label.get_text() for label in axes.get_xticklabels()]
    return {
        (ticks[round(bar.get_x() + bar.get_width() / 2)], container.get_label()): bar.get_height()
        for container in _containers(axes)
        for bar in container
    }


def _ticks(axes, minor=False):
    return [label.get_text() for label in axes.get_xticklabels(minor=minor)]


def test_accuracy_ladder_has_a_bar_per_item_in_a_panel_per_model_and_device(charts):
    panels = charts.accuracy(RESULTS["items"])
    assert [_title(panel) for panel in panels] == [f"{MODEL} · llamacpp-cpu", f"{MODEL} · mlx-cpu"]
    bars = {(device, *key): height for panel, device in zip(panels, QUANTS) for key, height in _bars(panel).items()}
    assert bars == {(row["device"], row["quant"], row["task"]): row["accuracy"] for row in RESULTS["items"]}
    assert all(_legend(panel) == sorted(TASKS) for panel in panels)
    assert all(panel.axes[0].get_ylim() == (0, 1) for panel in panels)  # the whole scale, so panels compare


def test_quants_follow_the_ladder_then_unknown_ones_alphabetically(charts):
    quants = ["zz-custom", "q2_k", "mlx-q4", "aa-custom", "native", "f16", "q4_k_m"]
    [panel] = charts.accuracy([dict(RESULTS["items"][0], quant=quant, item=quant) for quant in quants])
    assert _ticks(panel.axes[0]) == ["native", "f16", "q4_k_m", "q2_k", "mlx-q4", "aa-custom", "zz-custom"]


def test_speed_plots_prefill_and_decode_with_whiskers_but_not_seconds(charts):
    panels = charts.speed(RESULTS["runtime"])
    assert [_title(panel) for panel in panels] == [
        f"{MODEL} · {device} · {phase}" for device in ("llamacpp-cpu", "mlx-cpu") for phase in ("prefill", "decode")
    ]  # each phase on its own scale: decode would be a sliver beside prefill
    assert [_legend(panel) for panel in panels[:2]] == [["prefill@128", "prefill@512"], ["decode"]]
    assert _ticks(panels[0].axes[0]) == ["native", "q8_0", "q4_k_m", "q2_k"]
    speeds = {(row["device"], row["quant"], row["metric"]): row for row in RESULTS["runtime"] if row["unit"] == "tok/s"}
    drawn = {}
    for panel in panels:
        device = _title(panel).split(" · ")[1]
        for container in _containers(panel.axes[0]):
            whiskers = container.errorbar.lines[2][0].get_segments()
            for bar, whisker in zip(container, whiskers, strict=True):
                quant = _ticks(panel.axes[0])[round(bar.get_x() + bar.get_width() / 2)]
                drawn[device, quant, container.get_label()] = (bar.get_height(), *sorted(whisker[:, 1]))
    assert sorted(drawn) == sorted(speeds) and len(drawn) == 18  # none for ttft: seconds
    np.testing.assert_allclose(
        [drawn[key] for key in speeds],
        [
            (row["median"], row["median"] * (1 - row["spread"]), row["median"] * (1 + row["spread"]))
            for row in speeds.values()
        ],
    )


def test_memory_stacks_kv_on_the_rest_per_context_with_its_share(charts):
    [panel] = charts.memory(RESULTS["memory"])
    [axes] = panel.axes
    rest, kv = _containers(axes)
    assert (rest.get_label(), kv.get_label()) == ("non-KV (weights and the rest)", "KV cache")
    assert _ticks(axes) == ["512", "2k", "8k"] * 3 and _ticks(axes, minor=True) == ["native", "q8_0", "q4_k_m"]
    expected = [
        kv
        for quant in ("native", "q8_0", "q4_k_m")
        for row in RESULTS["memory"]
        if row["quant"] == quant
        for kv in row["kv_cache"]
    ]
    np.testing.assert_allclose(
        [(bar.get_height(), top.get_y(), top.get_height()) for bar, top in zip(rest, kv, strict=True)],
        [((c["total_bytes"] - c["kv_bytes"]) / MIB,) * 2 + (c["kv_bytes"] / MIB,) for c in expected],
    )
    shares = [text.get_text() for text in axes.texts]
    assert shares[-1] == "64%" and len(shares) == 9  # q4_k_m at 8192: 180 MiB of KV on 100 MiB of weights
    assert axes.get_ylabel() == "memory (MiB)"


def test_kld_plots_each_quants_tail_from_its_percentiles_to_its_max(charts):
    [panel] = charts.kld(RESULTS["fidelity"])
    [axes] = panel.axes
    assert _title(panel) == f"{MODEL} · llamacpp-cpu" and _legend(panel) == ["q8_0", "q2_k"]
    curves = [line for line in axes.get_lines() if line.get_label() in ("q8_0", "q2_k")]
    for line, row in zip(curves, RESULTS["fidelity"], strict=True):
        names = ("median", "p90", "p95", "p99", "p999", "max")
        np.testing.assert_allclose(line.get_xdata(), [row[f"{name}_kld"] for name in names])
        np.testing.assert_allclose(line.get_ydata(), [0.5, 0.1, 0.05, 0.01, 0.001, 1 / row["tokens"]])
    assert (axes.get_xscale(), axes.get_yscale()) == ("log", "log")


def test_the_fidelity_table_shows_llama_perplexitys_statistics():
    headers, [_q2_k, q8_0] = KINDS["fidelity"].table(RESULTS["fidelity"])
    assert headers[3:11] == ["mean KLD ± se", "median", "p90", "p95", "p99", "p99.9", "max", "Δp mean / RMS"]
    assert q8_0[2:4] == ("0.9910 [0.9880, 0.9940]", "9.00e-04 ± 3.0e-05") and q8_0[8] == "2.70e-02"
    judged = dict(RESULTS["fidelity"][0], baseline_mean_kld=1e-3, baseline_tail_kld=2e-2, judged_tail="p99")
    headers, [cells] = KINDS["fidelity"].table([judged])
    assert cells[headers.index("baseline mean / tail")] == "1.00e-03 / 2.00e-02 (p99)"


def test_each_plot_is_an_inline_svg_per_panel(charts):
    page = html.render(RESULTS)
    figures = re.findall(r'<figure id="([^"]+)">(.*?)</figure>', page, re.DOTALL)
    assert [(figure_id, body.count("<svg")) for figure_id, body in figures] == [
        ("accuracy-ladder", 2),
        ("speed", 4),
        ("memory", 1),
        ("kld", 1),
    ]
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page  # an SVG file's prolog has no place in HTML


def test_memory_table_dashes_a_peak_rss_that_was_not_measured():
    page = html.render(RESULTS)
    assert re.search(r"native-memory</td><td>258.0 MiB</td>(<td>[^<]*</td>){4}<td>-</td>", page)
    assert re.search(r"q4_k_m-memory</td><td>100.0 MiB</td>(<td>[^<]*</td>){4}<td>160.0 MiB</td>", page)


def test_strings_from_the_data_are_escaped_and_taken_literally(charts):
    evil = dict(RESULTS["items"][0], item="x<script>alert(1)</script>", model="m&<b>$x^2$")
    page = html.render({"items": [evil]})
    assert "<script" not in page and "<b>" not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "m&amp;&lt;b&gt;$x^2$ · llamacpp-cpu" in page  # the panel's title: text, not TeX


def test_the_page_needs_nothing_from_outside(charts):
    page = html.render(RESULTS)
    assert not re.search(r"<script|<link|<img|<iframe|src=|@import|href=\"(?!#)|url\((?!#)", page)


OUTCOMES = [
    Outcome(
        f"suites/test_accuracy.py::test_task_accuracy[{_item('llamacpp-cpu', 'q2_k', 'slm_facts')}]",
        "fail",
        message="acc regressed: 0.460 now vs 0.610 baseline (-15.0 points, n=200)",
    ),
    Outcome(f"suites/test_accuracy.py::test_task_accuracy[{_item('llamacpp-cpu', 'native', 'slm_facts')}]", "pass"),
    Outcome(
        f"suites/test_runtime.py::test_decode_speed[{MODEL}-llamacpp-cpu-native]",
        "not judged",
        "busy",
        "others used 30% of our CPUs",
    ),
]


def test_the_page_leads_with_the_runs_outcomes_what_changed_and_what_failed_and_colours_verdicts():
    page = html.render({**RESULTS, "changed": ["llama-cpp-python 0.3.36 → 0.3.40 (12 items)"]}, OUTCOMES)
    assert (
        '<p class="counts">3 items: <span class="verdict-pass">1 pass</span>, <span class="verdict-fail">1 fail</span>,'
        ' <span class="verdict-changed">1 not judged (1 busy)</span></p>'
    ) in page
    order = [
        page.index(mark)
        for mark in ('class="counts"', 'id="changed"', 'id="failed"', 'id="not-judged"', "<figure", "<h2>Accuracy</h2>")
    ]
    assert order == sorted(order)
    assert "<li>llama-cpp-python 0.3.36 → 0.3.40 (12 items)</li>" in page
    assert "q2_k-slm_facts]</code>: acc regressed: 0.460 now vs 0.610 baseline (-15.0 points, n=200)</li>" in page
    assert page.count('<td class="verdict-fail">FAIL</td>') == 3


def test_nothing_failed_or_changed_leaves_those_sections_out():
    page = html.render(RESULTS, OUTCOMES[1:2])
    assert (
        '<p class="counts">1 item: <span class="verdict-pass">1 pass</span>, <span class="verdict-fail">0 fail</span></p>'
        in page
    )
    assert 'id="changed"' not in page and 'id="failed"' not in page and 'id="not-judged"' not in page


@pytest.mark.parametrize("missing", sorted(TABLES))
def test_a_missing_section_is_left_out(missing, charts):
    page = html.render({key: rows for key, rows in RESULTS.items() if key != missing})
    assert f"<h2>{TABLES[missing]}</h2>" not in page
    assert [figure for key, figure in FIGURES.items() if f'<figure id="{figure}">' in page] == [
        figure for key, figure in FIGURES.items() if key != missing
    ]
    assert all(f"<h2>{title}</h2>" in page for key, title in TABLES.items() if key != missing)


@pytest.mark.parametrize("results", [{}, {key: [] for key in RESULTS}], ids=["no keys", "empty lists"])
def test_a_run_with_nothing_to_show_is_a_page_without_plots_or_tables(results):
    page = html.render(results)
    assert "<figure" not in page and "<table" not in page
    assert "0 items" in page


def test_a_runtime_with_only_seconds_has_no_speed_plot(charts):
    seconds = [row for row in RESULTS["runtime"] if row["unit"] == "s"]
    page = html.render({"runtime": seconds})
    assert '<figure id="speed">' not in page and "<h2>Runtime</h2>" in page


def test_without_matplotlib_the_page_has_its_tables_and_says_why_it_has_no_plots(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    monkeypatch.delitem(sys.modules, "pytest_slm.report.charts", raising=False)
    monkeypatch.delattr(report, "charts", raising=False)
    page = html.render(RESULTS)
    assert "<svg" not in page and "<figure" not in page
    assert page.count("charts need matplotlib: pip install 'pytest-slm[report]'") == 1
    assert all(f"<h2>{title}</h2>" in page for title in TABLES.values())


SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)  # Debian, Ubuntu, GitHub


def _depth_rows():
    """The fidelity rows again at two depths, so that the KL divergence is also plotted against depth."""
    return [
        dict(
            row, depth=depth, mean_kld=row["mean_kld"] * (1 + depth / 4096), p99_kld=row["p99_kld"] * (1 + depth / 2048)
        )
        for row in RESULTS["fidelity"]
        for depth in (512, 2048)
    ]


def _within_a_decade():
    """q8_0's rows at its depths on another runtime, mean and p99 within a decade: minor ticks get labels."""
    return [
        dict(row, device="mlx-cpu", p99_kld=3 * row["mean_kld"])
        for row in RESULTS["fidelity"] + _depth_rows()
        if row["quant"] == "q8_0"
    ]


def test_log_scale_tick_labels_are_plain_text(charts):
    rows = RESULTS["fidelity"] + _depth_rows()
    panels = charts.kld(rows) + charts.kld_depth(rows) + charts.kld_depth(_within_a_decade())
    labels = [_tick_labels(charts.svg(panel)) for panel in panels]
    assert labels[0] == [
        "10⁻³",
        "10⁻²",
        "10⁻¹",
        "10⁰",
        "10¹",
        "10⁻³",
        "10⁻²",
        "10⁻¹",
    ]  # KLD across, share of positions up
    assert labels[1] == ["0", "500", "1000", "1500", "2000", "10⁻³", "10⁻²", "10⁻¹", "10⁰"]
    assert "2×10⁻³" in labels[2]  # where a decade or two is shown, matplotlib labels some minor ticks too
    assert not [label for panel in labels for label in panel if "$" in label or "mathdefault" in label]


def _tick_labels(svg):
    """The text of each tick label of an SVG panel, x axis then y axis, minor ticks' among them."""
    root = ElementTree.fromstring(svg)
    ticks = [g for g in root.iter(f"{SVG}g") if re.fullmatch(r"[xy]tick_\d+", g.get("id", ""))]
    return [text.text for tick in ticks for text in tick.iter(f"{SVG}text")]


def _chromium(tmp_path, page, *arguments):
    """Headless chromium on `page` with `arguments`; its profile and caches stay in tmp_path, its
    temporary files in a short directory of their own: its socket's path must fit in 108 bytes,
    which an xdist worker's tmp_path can exceed."""
    home = tmp_path / "home"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1200,2400",
        *arguments,
        page.as_uri(),
    ]
    with tempfile.TemporaryDirectory(prefix="chromium-") as temporary:
        env = {
            **os.environ,
            "HOME": str(home),
            "TMPDIR": temporary,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
        }
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a browser to render the page: apt-get install -y chromium")
def test_a_headless_browser_draws_every_plot(tmp_path, charts):
    image = pytest.importorskip("PIL.Image", reason="reads the screenshot: pip install pillow")
    page, screenshot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(html.render(RESULTS), encoding="utf-8")
    result = _chromium(tmp_path, page, f"--screenshot={screenshot}")
    assert screenshot.exists(), f"chromium exited {result.returncode} without a screenshot:\n{result.stderr[-3000:]}"

    with image.open(screenshot) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape[:2] == (2400, 1200)
    colours = {
        "accuracy, first task": charts.TASK_COLOURS[0],
        "accuracy, second task": charts.TASK_COLOURS[1],
        "speed, prefill@128": charts.PREFILL_COLOURS[0],
        "speed, decode": charts.DECODE_COLOUR,
        "memory, non-KV": charts.REST_COLOUR,
        "memory, KV cache": charts.KV_COLOUR,
    }
    drawn = {name: _pixels_of(pixels, colour) for name, colour in colours.items()}
    # Each colour covers 8,000 pixels or more when the bars are drawn; its legend swatches alone, a few hundred.
    assert all(count > 2000 for count in drawn.values()), drawn


def _pixels_of(pixels, colour):
    rgb = np.array([int(colour[index : index + 2], 16) for index in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb) <= 2).all(axis=-1).sum())


# Run in the page once it is laid out: what a reader sees, the text of the page and of each plot, and
# each plot's tick labels that overlap another of the same axis (their boxes as the browser drew them).
PROBE = """
<script>
const seen = {text: document.body.innerText, svgText: [], overlaps: [], labels: 0};
document.querySelectorAll("svg").forEach((svg, panel) => {
  svg.querySelectorAll("text").forEach(text => seen.svgText.push(text.textContent));
  for (const axis of ["xtick", "ytick"]) {
    const boxes = [...svg.querySelectorAll(`g[id^="${axis}_"] text`)]
      .map(text => [text.textContent, text.getBoundingClientRect()]).filter(([, box]) => box.width > 0);
    seen.labels += boxes.length;
    boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
      const apart = p.right <= q.left + 0.5 || q.right <= p.left + 0.5 || p.bottom <= q.top + 0.5 || q.bottom <= p.top + 0.5;
      if (!apart) seen.overlaps.push([panel, axis, a, b]);
    }));
  }
});
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify(seen);
document.body.appendChild(out);
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs a browser to render the page: apt-get install -y chromium")
def test_a_reader_sees_no_tex_source_and_no_tick_labels_on_top_of_each_other(tmp_path, charts):
    page = tmp_path / "report.html"
    rendered = html.render({**RESULTS, "fidelity": RESULTS["fidelity"] + _depth_rows() + _within_a_decade()}, OUTCOMES)
    page.write_text(rendered.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = _chromium(tmp_path, page, "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"chromium exited {result.returncode} without the page's DOM:\n{result.stderr[-3000:]}"
    seen = json.loads(unescape(found.group(1)))
    assert "10⁻³" in seen["svgText"] and seen["labels"] > 50
    assert not [text for text in [seen["text"], *seen["svgText"]] if "$" in text or "mathdefault" in text]
    assert seen["overlaps"] == []
