// The receiver's live view: one websocket (/ui/live) pushes the session list and the watched
// session's decoded steps; the charts are plotly.js served by the receiver itself.
// Protocol and authorisation: docs/live.md.
"use strict";

const live = (window.ndpcaLive = {
  token: null,          // a session token or the admin token (sessionStorage, never the URL)
  watch: null,          // the session this page watches
  ws: null,
  connected: false,
  status: "connecting", // connecting | connected | down | unauthorized
  retryMs: 1000,
  sessions: [],
  cells: [],
  header: null,         // the watched session's configuration, rate, codec, channel
  steps: [],            // decoded steps, in order
  byStep: new Map(),
  summary: null,
  messages: 0,
  renders: 0,
  charts: !window.plotlyMissing && typeof window.Plotly !== "undefined",
});

const $ = (id) => document.getElementById(id);
const CHARTS = ["chart-channel", "chart-alloc", "chart-bits", "chart-latency", "chart-quality", "chart-loss"];
const NO_CHARTS = "Charts are unavailable: the receiver could not serve plotly.js (install the plotly " +
  "Python package on the receiver). The numbers still update.";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

// ------------------------------------------------------------------ token and address

function readFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) sessionStorage.setItem("ndpca-token", token);
  live.token = sessionStorage.getItem("ndpca-token");
  live.watch = params.get("session") || null;
  writeFragment(); // the token leaves the address bar once read
}

function writeFragment() {
  const hash = live.watch ? "#session=" + encodeURIComponent(live.watch) : "";
  history.replaceState(null, "", location.pathname + location.search + hash);
}

function askToken(why) {
  const form = $("token-form");
  form.hidden = false;
  if (why) banner(why, "info");
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  sessionStorage.setItem("ndpca-token", token);
  live.token = token;
  $("token-form").hidden = true;
  banner(null);
  connect();
});

// ------------------------------------------------------------------ connection

function banner(text, kind) {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text || "";
  el.className = "banner" + (kind ? " " + kind : "");
}

function setStatus(status, text) {
  live.status = status;
  const el = $("conn");
  el.textContent = text;
  el.className = "conn " + ({ connected: "conn-ok", down: "conn-down", unauthorized: "conn-down" }[status] || "conn-wait");
}

function connect() {
  if (!live.token) return askToken("Enter a token to open the live view.");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  let url = `${proto}://${location.host}/ui/live?token=${encodeURIComponent(live.token)}`;
  if (live.watch) url += "&session=" + encodeURIComponent(live.watch);
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    return receiverDown(String(err));
  }
  live.ws = ws;
  let refused = null;
  ws.onopen = () => setStatus("connecting", "connected, waiting for data");
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    live.messages += 1;
    if (msg.type === "error" && msg.fatal) refused = msg;
    onMessage(msg);
  };
  ws.onclose = (ev) => {
    live.connected = false;
    if (live.ws !== ws) return;
    if (ev.code === 1008 || (refused && refused.code === "unauthorized")) {
      setStatus("unauthorized", "token refused");
      sessionStorage.removeItem("ndpca-token");
      live.token = null;
      return askToken("The receiver refused this token: " + ((refused && refused.message) || ev.reason || "wrong token"));
    }
    if (refused && refused.code === "not_ready") {
      setStatus("connecting", "receiver loading");
      banner("The receiver is still loading its model; retrying.", "info");
      return setTimeout(connect, 1000);
    }
    receiverDown(ev.code === 1012 ? "it is restarting or shutting down"
      : ev.code === 1006 ? "no connection (is it down?)" : `connection closed (${ev.code})`);
  };
}

function receiverDown(why) {
  const s = Math.round(live.retryMs / 1000);
  setStatus("down", "receiver down");
  banner(`The receiver at ${location.host} is not reachable: ${why}. Retrying in ${s} s; ` +
         "the charts keep the last data received.");
  setTimeout(connect, live.retryMs);
  live.retryMs = Math.min(live.retryMs * 2, 10000);
}

function send(msg) {
  if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(msg));
}

function watch(id) {
  if (id === live.watch && live.header) return;
  live.watch = id;
  live.header = null;
  live.steps = [];
  live.byStep = new Map();
  live.summary = null;
  writeFragment();
  send({ type: "watch", session: id });
  renderList();
  scheduleRender();
}

// ------------------------------------------------------------------ messages

function onMessage(msg) {
  switch (msg.type) {
    case "hello":
      live.connected = true;
      live.retryMs = 1000;
      setStatus("connected", msg.admin ? "live (admin)" : "live");
      banner(live.charts ? null : NO_CHARTS, "info");
      break;
    case "sessions":
      live.sessions = msg.sessions;
      live.cells = msg.cells || [];
      if (!live.watch && live.sessions.length) {
        const running = live.sessions.find((s) => s.state === "running");
        watch((running || live.sessions[0]).id);
      }
      renderList();
      break;
    case "session":
      if (msg.id !== live.watch) break;
      if (msg.reset) {
        live.header = msg.header;
        live.steps = [];
        live.byStep = new Map();
        setupPlayer();
      }
      for (const st of msg.steps) {
        const old = live.byStep.get(st.step);
        if (old) Object.assign(old, st);
        else { live.steps.push(st); live.byStep.set(st.step, st); }
      }
      if (msg.late) {
        for (const [step, sources] of Object.entries(msg.late)) {
          const st = live.byStep.get(Number(step));
          if (st) st.late = sources;
        }
      }
      live.summary = msg.summary;
      scheduleRender();
      break;
    case "gone":
      banner(`Session ${msg.id} was removed from the receiver.`, "info");
      live.watch = null;
      live.header = null;
      writeFragment();
      scheduleRender();
      break;
    case "error":
      if (!msg.fatal) banner(msg.message, "info");
      if (msg.code === "unknown_session" || msg.code === "forbidden") {
        live.watch = null;
        writeFragment();
      }
      break;
  }
}

// ------------------------------------------------------------------ session list

function renderList() {
  const el = $("session-list");
  el.textContent = "";
  if (!live.sessions.length) {
    el.innerHTML = '<p class="dim">no session this token opens</p>';
    return;
  }
  // grouped by cell once rooms share cells; every session's cell is null until then
  const groups = new Map();
  for (const s of live.sessions) {
    const key = s.cell == null ? "" : s.cell;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  const showCells = groups.size > 1 || !groups.has("");
  for (const [cell, items] of groups) {
    if (showCells) {
      const h = document.createElement("div");
      h.className = "cell";
      h.textContent = cell === "" ? "no cell" : "cell " + cell;
      el.appendChild(h);
    }
    for (const s of items) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "session" + (s.id === live.watch ? " selected" : "");
      b.dataset.session = s.id;
      b.innerHTML = `<span class="id"></span><span class="state state-${s.state}">${s.state}</span>` +
        `<div class="meta">${s.mode} · ${s.steps} steps · edges ${s.connected.length}/${s.expected.length}` +
        ` · late ${s.late_chunks} · missing ${s.missing_chunks}</div>`;
      b.querySelector(".id").textContent = s.id;
      b.onclick = () => watch(s.id);
      el.appendChild(b);
    }
  }
}

// ------------------------------------------------------------------ player

function setupPlayer() {
  const h = live.header;
  const sel = $("player-channel");
  sel.textContent = "";
  const enhanced = h.enhancer !== "identity";
  for (let c = 0; c < h.out_channels; c++) {
    const o = document.createElement("option");
    o.value = c;
    o.textContent = enhanced ? (h.out_channels === 1 ? "enhanced speech" : `enhanced mic ${c}`) : `mic ${c}`;
    sel.appendChild(o);
  }
  $("player-what").textContent = enhanced
    ? `the enhanced speech (${h.enhancer} stage), newest seconds`
    : "the decoded microphones, newest seconds";
}

$("player-load").addEventListener("click", () => {
  if (!live.header) return;
  const q = new URLSearchParams({ seconds: $("player-seconds").value, channel: $("player-channel").value || "0",
                                  token: live.token, t: Date.now() });
  const audio = $("audio");
  audio.preload = "auto";
  audio.src = `/ui/sessions/${encodeURIComponent(live.header.id)}/recent.wav?${q}`;
  audio.load();
  audio.play().catch(() => {}); // a browser may want a real click first: the controls then play
});

// ------------------------------------------------------------------ rendering

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

const fmt = (v, d = 0) => (v == null || !isFinite(v) ? "-" : Number(v).toFixed(d).replace(/^-(0\.?0*)$/, "$1"));
const ms = (p) => (p ? `${fmt(p.p50)} / ${fmt(p.p95)} / ${fmt(p.p99)}` : "-");

function tile(k, v, small) {
  return `<div class="tile"><div class="k">${k}</div><div class="v">${v}${small ? ` <small>${small}</small>` : ""}</div></div>`;
}

function render() {
  live.renders += 1;
  const h = live.header, sm = live.summary, steps = live.steps;
  if (!h || !sm) {
    $("title").innerHTML = '<span class="dim">no session selected</span>';
    $("tiles").innerHTML = "";
    if (live.charts) for (const id of CHARTS) Plotly.purge($(id));
    return;
  }
  const last = steps.length ? steps[steps.length - 1] : null;
  const trace = (h.trace && (h.trace.notes || h.trace.path)) || "";
  $("title").innerHTML = `<b></b> <span class="state state-${sm.state}">${sm.state}</span> ` +
    `<span class="dim">${h.mode} · ${h.arch} · T = ${fmt(h.period_s * 1e3)} ms · ${h.enhancer} stage</span>` +
    '<div class="channel dim"></div>';
  $("title").querySelector("b").textContent = h.id;
  $("title").querySelector(".channel").textContent = "channel: " + trace;
  const q = sm.quality || {};
  const qName = h.quality.includes("snr_db") ? "snr_db" : h.quality[0];
  const qVal = qName ? (q[`${qName}_overall`] ?? q[`${qName}_mean_of_steps`]) : null;
  $("tiles").innerHTML = [
    tile("steps", sm.steps, `${sm.output_samples ? fmt(sm.output_samples / h.sample_rate, 1) + " s out" : ""}`),
    tile("edges", `${sm.connected.length} / ${sm.expected.length}`),
    tile("capacity C_t", last ? fmt(last.capacity_bps / 1e3, 1) : "-", "kbit/s"),
    tile("budget L_t", last ? last.budget_coefficients : "-", "coeff."),
    tile("steps within budget", `${sm.steps_within_budget} / ${sm.steps_decoded}`),
    tile("e2e ms p50/95/99", ms(sm.e2e_ms)),
    tile("decode ms p50/95/99", ms(sm.decode_ms)),
    tile("late / missing chunks", `${sm.late_chunks} / ${sm.missing_chunks}`),
    tile("quality", qName ? fmt(qVal, 1) : "-", qName ? "dB SNR" : "no reference"),
  ].join("");
  if (!live.charts) {
    for (const id of CHARTS) {
      $(id).innerHTML = '<div class="nochart">Charts need plotly.js, which the receiver serves from its ' +
        "<code>plotly</code> Python package (<code>pip install plotly</code>); the numbers above still update.</div>";
    }
    return;
  }
  drawCharts(h, sm, steps);
}

function layout(title, extra) {
  return Object.assign({
    title: { text: title, font: { size: 13 }, x: 0.01, xanchor: "left" },
    margin: { l: 52, r: 52, t: 30, b: 34 },
    legend: { orientation: "h", x: 0, y: -0.2, font: { size: 10 } },
    xaxis: { title: { text: "trace time (s)", font: { size: 11 }, standoff: 2 }, automargin: true },
    font: { size: 11 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    uirevision: live.watch,
  }, extra || {});
}

const CONFIG = { displayModeBar: false, responsive: true };

function drawCharts(h, sm, steps) {
  const t = steps.map((s) => s.t);
  const idx = steps.map((s) => s.step);
  const sources = h.sources;
  const line = (name, y, extra) => Object.assign({ type: "scatter", mode: "lines", name, x: t, y, customdata: idx,
                                                   line: { shape: "hv", width: 1.6 } }, extra || {});
  const color = (s) => COLORS[s % COLORS.length];
  const nv = h.vectors_per_step || 1;

  // capacity and the Eq. 3 budget
  Plotly.react($("chart-channel"), [
    line("capacity C_t (kbit/s)", steps.map((s) => s.capacity_bps / 1e3), { meta: "capacity", line: { shape: "hv", color: "#1f77b4", width: 1.8 } }),
    line("budget L_t (coefficients)", steps.map((s) => s.budget_coefficients), { meta: "budget", yaxis: "y2", line: { shape: "hv", color: "#d62728", width: 1.6 } }),
  ], layout("Channel capacity C_t and Eq. 3 budget L_t", {
    yaxis: { title: { text: "kbit/s", font: { size: 11 } }, rangemode: "tozero", color: "#1f77b4" },
    yaxis2: { title: { text: "coefficients per step", font: { size: 11 } }, overlaying: "y", side: "right", rangemode: "tozero", color: "#d62728", showgrid: false, zeroline: false },
  }), CONFIG);

  // NDPCA allocation per source, stacked (Fig. 3a)
  const alloc = sources.map((s) => line(`source ${s}`, steps.map((st) => st.allocation[String(s)]),
    { meta: `alloc:${s}`, stackgroup: "alloc", line: { shape: "hv", width: 0.5, color: color(s) } }));
  alloc.push(line(`budget L_t / n_v (n_v = ${nv})`, steps.map((s) => Math.floor(s.budget_coefficients / nv)),
    { meta: "budget_per_vector", line: { shape: "hv", color: "#d62728", width: 1.4 } }));
  alloc.push(line("components received", steps.map((st) => sources.reduce((a, s) => a + (st.k_received[String(s)] || 0), 0)),
    { meta: "received", line: { shape: "hv", color: "#222", width: 1, dash: "dot" } }));
  Plotly.react($("chart-alloc"), alloc, layout("Allocation per source (NDPCA, Fig. 3a)", {
    yaxis: { title: { text: "components per latent vector", font: { size: 11 } }, rangemode: "tozero" },
  }), CONFIG);

  // bits received per source against floor(C_t T)
  const bits = sources.map((s) => line(`source ${s}`, steps.map((st) => st.bits_received[String(s)]),
    { meta: `bits:${s}`, stackgroup: "bits", line: { shape: "hv", width: 0.5, color: color(s) } }));
  bits.push(line("budget floor(C_t T)", steps.map((s) => s.budget_bits),
    { meta: "budget_bits", line: { shape: "hv", color: "#d62728", width: 1.4 } }));
  Plotly.react($("chart-bits"), bits, layout("Bits received per source against the budget", {
    yaxis: { title: { text: "bits per step", font: { size: 11 } }, rangemode: "tozero" },
  }), CONFIG);

  // latency
  const t0 = t.length ? t[0] : 0, t1 = t.length ? t[t.length - 1] : 1;
  Plotly.react($("chart-latency"), [
    line("end-to-end", steps.map((s) => s.e2e_ms), { meta: "e2e", mode: "lines", line: { color: "#1f77b4", width: 1.4 } }),
    line("decode", steps.map((s) => s.decode_ms), { meta: "decode", mode: "lines", line: { color: "#ff7f0e", width: 1.4 } }),
    { type: "scatter", mode: "lines", name: `deadline ${fmt(h.deadline_ms)} ms`, x: [t0, t1], y: [h.deadline_ms, h.deadline_ms],
      meta: "deadline", line: { color: "#999", dash: "dash", width: 1 } },
  ], layout(`Latency (ms): e2e p50 ${fmt(sm.e2e_ms.p50)}, p95 ${fmt(sm.e2e_ms.p95)}; decode p50 ${fmt(sm.decode_ms.p50, 1)}, p95 ${fmt(sm.decode_ms.p95, 1)}`, {
    yaxis: { title: { text: "ms", font: { size: 11 } }, rangemode: "tozero" },
  }), CONFIG);

  // quality against the clean reference
  const out = h.enhancer === "identity" ? "decoded" : "enhanced";
  const names = { snr_db: `${out} mic 0 vs clean speech`,
                  mics_snr_db: h.out_channels > 1 ? `${out} mics vs captured mics` : `${out} mic 0 vs captured mic 0` };
  const qtraces = h.quality.map((n, i) => line(names[n] || n, steps.map((s) => s[n]),
    { meta: `quality:${n}`, mode: "lines", line: { width: 1.4, color: ["#2ca02c", "#9467bd"][i % 2] } }));
  const q = sm.quality || {};
  const qtitle = h.quality.length
    ? "Quality: SNR per step (dB); mean " + h.quality.map((n) => fmt(q[`${n}_mean_of_steps`], 1)).join(" / ")
    : "Quality";
  Plotly.react($("chart-quality"), qtraces, layout(qtitle, {
    yaxis: { title: { text: "dB", font: { size: 11 } } },
    annotations: h.quality.length ? [] : [{ text: "no clean reference registered for this session<br>(ndpca serve --reference, or the session's 'reference')",
      showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 12, color: "#7c8899" } }],
  }), CONFIG);

  // late and missing chunks
  Plotly.react($("chart-loss"), [
    { type: "bar", name: "missing", x: t, y: steps.map((s) => s.missing.length), customdata: idx, meta: "missing", marker: { color: "#d62728" } },
    { type: "bar", name: "late", x: t, y: steps.map((s) => s.late.length), customdata: idx, meta: "late", marker: { color: "#ff7f0e" } },
  ], layout(`Late and missing chunks (total late ${sm.late_chunks}, missing ${sm.missing_chunks})`, {
    barmode: "stack", yaxis: { title: { text: "chunks per step", font: { size: 11 } }, rangemode: "tozero", dtick: 1 },
  }), CONFIG);
}

// ------------------------------------------------------------------ start

if (!live.charts) banner(NO_CHARTS, "info");
readFragment();
connect();
