"""The live view in a real browser: headless Chromium (Debian's package; `make test` installs it
with .ci/install-chromium when /usr/bin/chromium is missing) loads the page from a receiver on
port 0 during a short real-time run of four real edge clients over websockets, and the charts
must hold the steps the REST stats hold. Screenshots go to the test's tmp dir (the README's
picture is `make screenshot`)."""

import json
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import Edges, Receiver, one_torch_thread, write_capacity_trace  # noqa: F401

from server.headless import Chromium, find_chromium
from server.settings import ReceiverSettings

REPO = Path(__file__).resolve().parents[2]
INSTALL_LOG = REPO / ".venv" / "chromium-install.log"
TOKEN = "page-token"
CHARTS = ("chart-channel", "chart-alloc", "chart-bits", "chart-latency", "chart-quality", "chart-loss")
CHART_DATA = """(() => {
  const out = {};
  for (const id of CHARTS) {
    out[id] = (document.getElementById(id).data || []).map((d) => ({
      meta: d.meta, name: d.name, stackgroup: d.stackgroup || null,
      x: Array.from(d.x || []), y: Array.from(d.y || []),
      steps: d.customdata ? Array.from(d.customdata) : null}));
  }
  return out;
})()""".replace("CHARTS", json.dumps(CHARTS))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        why = (INSTALL_LOG.read_text().strip() if INSTALL_LOG.is_file() else
               "the test set-up (`make test` -> .ci/install-chromium, as root) did not run here; "
               "`make chromium` or `apt-get install -y chromium` installs it")
        pytest.skip(f"Chromium is not installed (/usr/bin/chromium is missing) and could not be "
                    f"installed: {why}")
    return path


def by_meta(charts: dict) -> dict[str, dict[int, float]]:
    """Every per-step trace of every chart: meta -> {step: value}."""
    out = {}
    for traces in charts.values():
        for tr in traces:
            if tr["steps"] is not None:
                out[tr["meta"]] = dict(zip(tr["steps"], tr["y"]))
                out[tr["meta"] + ":t"] = dict(zip(tr["steps"], tr["x"]))
    return out


def check_charts_hold(charts: dict, rest_steps: list[dict], quality: list[str]) -> int:
    """Every step the charts show equals the REST step of that number; returns how many."""
    traces = by_meta(charts)
    rest = {st["step"]: st for st in rest_steps}
    shown = sorted(traces["capacity"])
    assert shown and set(shown) <= set(rest), (shown[:5], sorted(rest)[:5])
    approx = pytest.approx
    for n in shown:
        st = rest[n]
        assert traces["capacity:t"][n] == approx(st["t"])
        assert traces["capacity"][n] == approx(st["capacity_bps"] / 1e3)
        assert traces["budget"][n] == st["budget_coefficients"]
        assert traces["budget_bits"][n] == st["budget_bits"]
        for s, k in st["allocation"].items():
            assert traces[f"alloc:{s}"][n] == k and traces[f"bits:{s}"][n] == st["bits_received"][s]
        assert traces["received"][n] == sum(st["k_received"].values())
        assert traces["missing"][n] == len(st["missing"]) and traces["late"][n] == len(st["late"])
        for meta, key in (("e2e", "e2e_ms"), ("decode", "decode_ms"),
                          *((f"quality:{q}", q) for q in quality)):
            assert (traces[meta][n] is None and st[key] is None) or traces[meta][n] == approx(st[key]), (n, key)
    return len(shown)


def test_live_page_charts_hold_the_rest_steps_during_a_real_run(tmp_path, chromium):
    codec = tiny_codec()
    T = codec.rate.chunk_seconds
    n_chunks = 80  # 5.1 s at T = 64 ms
    trace = write_capacity_trace(tmp_path / "trace.csv", [(0.0, 1000.0), (0.8, 2500.0), (1.6, 6000.0),
                                                          (2.6, 1800.0), (3.6, 3300.0)])
    torch.manual_seed(5)
    audio = torch.randn(4, n_chunks * codec.chunk_samples) * 0.1
    mics, clean = tmp_path / "mics.wav", tmp_path / "clean.wav"
    sf.write(mics, audio.T.numpy(), codec.sample_rate, subtype="FLOAT")
    sf.write(clean, audio[0].numpy(), codec.sample_rate, subtype="FLOAT")
    settings = ReceiverSettings(session="room", token=TOKEN, trace=str(trace), reference=str(clean),
                                mics_reference=str(mics), grace_s=0.2)
    with Receiver(settings, codec) as rx, Chromium(chromium, 1440, 1100) as browser:
        page = browser.open(f"{rx.http}/ui#token={TOKEN}&session=room")
        page.wait_for("window.ndpcaLive && ndpcaLive.status === 'connected' && ndpcaLive.header", 90)
        assert page.evaluate("ndpcaLive.charts"), "plotly.js did not load from the receiver"
        assert page.evaluate("location.hash") == "#session=room"  # the token left the address bar
        assert page.evaluate("ndpcaLive.summary.state") == "waiting"

        edges = Edges(rx.url, "room", TOKEN, codec, audio, [0, 1, 2, 3]).start()
        # the charts render on the next animation frame after a step arrives: wait for them
        page.wait_for("ndpcaLive.summary.state === 'running' && "
                      "(document.getElementById('chart-channel').data || []).some((d) => "
                      "d.meta === 'capacity' && d.customdata && d.customdata.length >= 30)", 60)
        during = page.evaluate(CHART_DATA)
        running_png = page.screenshot(tmp_path / "live-running.png")
        assert page.evaluate("ndpcaLive.summary.state") == "running"  # the page shows a live session
        results = edges.join(60)
        rx.wait_state("room", "finished", 30)
        page.wait_for("ndpcaLive.summary && ndpcaLive.summary.state === 'finished'", 30)
        time.sleep(0.5)  # the last update rendered
        stats = rx.stats("room")
        after = page.evaluate(CHART_DATA)
        tiles = page.evaluate("document.getElementById('tiles').innerText")
        listed = page.evaluate("document.getElementById('session-list').innerText")

        # the player: the newest seconds of the decoded output, through the authorised route
        page.evaluate("document.getElementById('player-load').click()")
        duration = page.wait_for("document.getElementById('audio').duration", 30)
        finished_png = page.screenshot(tmp_path / "live-finished.png")

        rx.stop()  # the page degrades to a clear message and keeps its charts
        page.wait_for("ndpcaLive.status === 'down'", 30)
        banner = page.evaluate("document.getElementById('banner').innerText")
        page.screenshot(tmp_path / "live-receiver-down.png")
        errors = [m for m in page.console() if m.startswith("exception")]

    assert all(isinstance(r, dict) for r in results), results
    steps = stats["steps"]
    assert len(steps) >= n_chunks and not errors, errors
    # during the run the charts held a prefix of what REST holds at the end; after it, all of it
    assert 30 <= check_charts_hold(during, steps, ["snr_db", "mics_snr_db"]) < len(steps)
    assert check_charts_hold(after, steps, ["snr_db", "mics_snr_db"]) == len(steps)
    assert len({st["budget_coefficients"] for st in steps}) >= 3  # the budget moved
    alloc = [tr for tr in after["chart-alloc"] if tr["meta"].startswith("alloc:")]
    assert len(alloc) == 4 and {tr["stackgroup"] for tr in alloc} == {"alloc"}  # stacked areas
    s = stats["summary"]
    assert f"{s['late_chunks']} / {s['missing_chunks']}" in tiles and str(s["steps"]) in tiles
    assert "room" in listed and "finished" in listed
    assert duration == pytest.approx(min(10.0, s["output_samples"] / codec.sample_rate), abs=0.05)
    assert "not reachable" in banner
    for png in (running_png, finished_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    print(f"screenshots in {tmp_path}; T = {T * 1e3:.0f} ms, {len(steps)} steps")
