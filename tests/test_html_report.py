"""The HTML report: its plots hold the bars the data calls for, it survives missing sections, and a
real browser draws it."""

import os
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from pytest_slm.report import html as html_report

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
                rows.append(dict(
                    item=_item(device, quant, task), model=MODEL, device=device, quant=quant, task=task,
                    accuracy=accuracy - DROP[quant], baseline=accuracy, delta_points=0.0 - 100 * DROP[quant],
                    regressed=int(100 * DROP[quant]), improved=1, p_value=0.002 if DROP[quant] > 0.1 else 0.4,
                    verdict=verdict,
                ))
    return rows


def _runtime_rows():
    rows = []
    for device, quants in QUANTS.items():
        for quant in quants:
            base = dict(item=_item(device, quant, "latency"), model=MODEL, device=device, quant=quant)
            for metric, speed in SPEED.items():
                median = speed * SPEEDUP[quant]
                rows.append(dict(base, metric=metric, unit="tok/s", median=median, min=1.05 * median, spread=0.04,
                                 baseline=median, change_pct=1.2, limit_pct=10.0, rounds=1, load=0.4, verdict="pass"))
            rows.append(dict(base, metric="ttft@128", unit="s", median=0.15, min=0.14, spread=0.02, baseline=None,
                             change_pct=None, limit_pct=None, rounds=1, load=0.4, verdict="updated"))
    return rows


def _memory_rows():
    rows = []
    for quant, weights in WEIGHTS_MIB.items():
        kv_cache = []
        for context in (512, 2048, 8192):
            kv = KV_MIB_PER_TOKEN * context
            total = weights + kv
            kv_cache.append(dict(context=context, kv_bytes=int(kv * MIB), total_bytes=int(total * MIB), share=kv / total))
        rows.append(dict(item=_item("llamacpp-cpu", quant, "memory"), model=MODEL, device="llamacpp-cpu", quant=quant,
                         weights_bytes=weights * MIB, kv_bytes_per_token=int(KV_MIB_PER_TOKEN * MIB),
                         peak_rss_bytes=None if quant == "native" else (weights + 60) * MIB,  # None: not Linux
                         kv_cache=kv_cache, verdict="pass"))
    return rows


def _fidelity_rows():
    return [
        dict(item=_item("llamacpp-cpu", quant, "fidelity"), model=MODEL, device="llamacpp-cpu", quant=quant,
             tokens=4096, mean_kld=kld, p99_kld=12 * kld, top1_agreement=agreement, reference_perplexity=14.2,
             perplexity=14.2 + 40 * kld, verdict=verdict)
        for quant, kld, agreement, verdict in (("q8_0", 0.0009, 0.991, "pass"), ("q2_k", 0.21, 0.78, "FAIL"))
    ]


RESULTS = {
    "items": _accuracy_rows(),
    "parity": [dict(item=f"{MODEL}-mlx-cpu-native-vs-llamacpp-cpu-f32", tokens=4096, task_outcomes="4 tasks, 9 flips", mean_kld=0.0004, p99_kld=0.004,
                    top1_agreement=0.997, reference_perplexity=14.2, perplexity=14.21, verdict="pass")],
    "fidelity": _fidelity_rows(),
    "runtime": _runtime_rows(),
    "memory": _memory_rows(),
    "baseline_writes": [{"path": "baselines/smollm2-135m/mlx-cpu/native/slm_facts-0shot.json", "changed": True}],
}
TABLES = {"items": "Accuracy", "parity": "Parity", "fidelity": "Fidelity", "runtime": "Runtime", "memory": "Memory"}
FIGURES = {"items": "accuracy-ladder", "runtime": "speed", "memory": "memory"}


def _figure(page, figure_id):
    match = re.search(f'<figure id="{figure_id}">.*?</figure>', page, re.DOTALL)
    assert match, f"no figure {figure_id}"
    return match.group(0)


def _x_ticks(svg):
    return re.findall(r'<text class="x-tick"[^>]*>([^<]*)</text>', svg)


def test_accuracy_ladder_has_a_bar_per_item_in_a_panel_per_model_and_device():
    figure = _figure(html_report.render(RESULTS), "accuracy-ladder")
    assert figure.count('<rect class="acc-bar"') == len(RESULTS["items"]) == 12
    assert figure.count("<svg") == 2
    assert f"{MODEL} · llamacpp-cpu" in figure and f"{MODEL} · mlx-cpu" in figure
    assert all(f">{task}</text>" in figure for task in TASKS)  # the legend


def test_quants_follow_the_ladder_then_unknown_ones_alphabetically():
    quants = ["zz-custom", "q2_k", "mlx-q4", "aa-custom", "native", "f16", "q4_k_m"]
    rows = [dict(RESULTS["items"][0], quant=quant, item=quant) for quant in quants]
    figure = _figure(html_report.render({"items": rows}), "accuracy-ladder")
    assert _x_ticks(figure) == ["native", "f16", "q4_k_m", "q2_k", "mlx-q4", "aa-custom", "zz-custom"]


def test_speed_plots_prefill_and_decode_with_whiskers_but_not_seconds():
    figure = _figure(html_report.render(RESULTS), "speed")
    speed_rows = [row for row in RESULTS["runtime"] if row["unit"] == "tok/s"]
    assert figure.count('<rect class="speed-bar"') == figure.count('class="whisker"') == len(speed_rows) == 18
    assert figure.count("<svg") == 4  # prefill and decode, each on its own scale, per model and device
    assert re.findall(r'class="legend"[^>]*>([^<]*)<', figure)[:3] == ["prefill@128", "prefill@512", "decode"]
    assert _x_ticks(figure)[:4] == ["native", "q8_0", "q4_k_m", "q2_k"]
    assert "ttft" not in figure


def test_memory_stacks_kv_on_the_rest_per_context_with_its_share():
    figure = _figure(html_report.render(RESULTS), "memory")
    assert figure.count('<rect class="mem-kv"') == figure.count('<rect class="mem-rest"') == 9
    assert _x_ticks(figure) == ["native", "q8_0", "q4_k_m"]
    assert re.findall(r'class="context-tick"[^>]*>([^<]*)<', figure)[:3] == ["512", "2k", "8k"]
    assert ">64%</text>" in figure  # q4_k_m at 8192: 180 MiB of KV on 100 MiB of weights
    assert ">memory (MiB)</text>" in figure


def test_memory_table_dashes_a_peak_rss_that_was_not_measured():
    page = html_report.render(RESULTS)
    assert re.search(r"native-memory</td><td>258.0 MiB</td>(<td>[^<]*</td>){4}<td>-</td>", page)
    assert re.search(r"q4_k_m-memory</td><td>100.0 MiB</td>(<td>[^<]*</td>){4}<td>160.0 MiB</td>", page)


def test_strings_from_the_data_are_escaped():
    evil = dict(RESULTS["items"][0], item="x<script>alert(1)</script>", model="m&<b>", task='"t"')
    page = html_report.render({"items": [evil]})
    assert "<script" not in page and "<b>" not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "m&amp;&lt;b&gt;" in page and "&quot;t&quot;" in page


def test_the_page_needs_nothing_from_outside():
    page = html_report.render(RESULTS)
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import", page)


def test_verdicts_are_counted_per_item_and_coloured():
    page = html_report.render(RESULTS)
    # 12 accuracy items (2 FAIL, 4 updated), 6 latency items (updated: their ttft has no baseline),
    # 3 memory, 2 fidelity (1 FAIL), 1 parity
    assert '24 items: <span class="verdict-pass">11 pass</span>, <span class="verdict-fail">3 FAIL</span>' in page
    assert '<span class="verdict-updated">10 updated</span>' in page
    assert page.count('<td class="verdict-fail">FAIL</td>') == 3


@pytest.mark.parametrize("missing", sorted(TABLES))
def test_a_missing_section_is_left_out(missing):
    page = html_report.render({key: rows for key, rows in RESULTS.items() if key != missing})
    assert f"<h2>{TABLES[missing]}</h2>" not in page
    assert [figure for key, figure in FIGURES.items() if f'<figure id="{figure}">' in page] == [
        figure for key, figure in FIGURES.items() if key != missing
    ]
    assert all(f"<h2>{title}</h2>" in page for key, title in TABLES.items() if key != missing)


@pytest.mark.parametrize("results", [{}, {key: [] for key in RESULTS}], ids=["no keys", "empty lists"])
def test_a_run_with_nothing_to_show_is_a_page_without_plots_or_tables(results):
    page = html_report.render(results)
    assert "<figure" not in page and "<table" not in page
    assert "0 items" in page


def test_a_runtime_with_only_seconds_has_no_speed_plot():
    seconds = [row for row in RESULTS["runtime"] if row["unit"] == "s"]
    page = html_report.render({"runtime": seconds})
    assert '<figure id="speed">' not in page and "<h2>Runtime</h2>" in page


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)  # Debian, Ubuntu, GitHub


@pytest.mark.skipif(CHROMIUM is None, reason="needs a browser to render the page: apt-get install -y chromium")
def test_a_headless_browser_draws_every_plot(tmp_path):
    page, screenshot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(html_report.render(RESULTS), encoding="utf-8")
    home = tmp_path / "home"  # chromium's profile, caches and temporary files stay in tmp_path
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_path),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,2400",
        f"--screenshot={screenshot}", page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert screenshot.exists(), f"chromium exited {result.returncode} without a screenshot:\n{result.stderr[-3000:]}"

    pixels = _png_rgb(screenshot.read_bytes())
    assert pixels.shape[:2] == (2400, 1200)
    colours = {
        "accuracy, first task": html_report.TASK_COLOURS[0],
        "accuracy, second task": html_report.TASK_COLOURS[1],
        "speed, prefill@128": html_report.PREFILL_COLOURS[0],
        "speed, decode": html_report.DECODE_COLOUR,
        "memory, non-KV": html_report.REST_COLOUR,
        "memory, KV cache": html_report.KV_COLOUR,
    }
    drawn = {name: _pixels_of(pixels, colour) for name, colour in colours.items()}
    # Each colour covers 8,000 pixels or more when the bars are drawn; its legend swatches alone, 121 each.
    assert all(count > 1000 for count in drawn.values()), drawn


def _pixels_of(pixels, colour):
    rgb = np.array([int(colour[index:index + 2], 16) for index in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb) <= 2).all(axis=-1).sum())


def _png_rgb(data):
    """An 8-bit, non-interlaced RGB or RGBA PNG (what chromium writes) as an array of RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = {}, 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunks.setdefault(kind, []).append(data[position + 8:position + 8 + length])
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert (depth, interlace, colour_type in (2, 6)) == (8, 0, True)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * channels
    previous = np.zeros(stride, np.uint8)
    rows = []
    for row in range(height):
        start = row * (stride + 1)
        previous = _unfilter(raw[start], np.frombuffer(raw, np.uint8, stride, start + 1), previous, channels)
        rows.append(previous)
    return np.stack(rows).reshape(height, width, channels)[..., :3]


def _unfilter(kind, line, previous, channels):
    """Undo one scanline's PNG filter: None, Sub and Up as array sums; Average and Paeth byte by byte."""
    if kind == 0:
        return line.copy()
    if kind == 1:
        return line.reshape(-1, channels).cumsum(axis=0, dtype=np.uint8).reshape(-1)
    if kind == 2:
        return line + previous
    out, up = bytearray(line.tobytes()), previous.tobytes()
    for index in range(len(out)):
        left = out[index - channels] if index >= channels else 0
        if kind == 3:
            out[index] = (out[index] + (left + up[index]) // 2) & 0xFF
            continue
        upper_left = up[index - channels] if index >= channels else 0
        estimate = left + up[index] - upper_left
        distances = (abs(estimate - left), abs(estimate - up[index]), abs(estimate - upper_left))
        out[index] = (out[index] + (left, up[index], upper_left)[distances.index(min(distances))]) & 0xFF
    return np.frombuffer(bytes(out), np.uint8)
