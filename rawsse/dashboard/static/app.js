// rawsse dashboard: reads the server's figures from the $stats topic over SSE, draws
// them, and lets you try a topic. Plain JS, no build step, same origin only (CSP).
"use strict";

const STATS_URL = "/events?topic=" + encodeURIComponent("$stats");
const WINDOW = 300; // samples kept for the charts: five minutes at one a second
const MIN_SPAN = 60; // the charts widen from one minute to WINDOW as samples come in
const LOG_LIMIT = 200; // received events kept in the tester's log

const $ = (id) => document.getElementById(id);
const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

function formatRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 || value === 0 ? integer.format(value) : decimal.format(value);
}

function formatBytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit ? decimal.format(value) : integer.format(value)) + " " + units[unit];
}

function formatDuration(seconds) {
  seconds = Math.floor(seconds);
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function formatLatency(seconds, label) {
  // Estimated from the histogram's buckets, as Prometheus' histogram_quantile does.
  if (seconds === null || seconds === undefined) return `${label} –`;
  const text = seconds < 0.001 ? `${(seconds * 1e6).toFixed(0)} µs` : seconds < 1 ? `${(seconds * 1e3).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
  return `${label} ${text}`;
}

function show(id, text, value) {
  const element = $(id);
  element.textContent = text;
  if (value !== undefined) element.dataset.value = String(value);
}

// Rates from the deltas of cumulative counters between two snapshots.
function rates(previous, current) {
  if (!previous) return null;
  const seconds = current.uptime - previous.uptime;
  if (seconds <= 0 || current.events_published < previous.events_published) return null; // restarted
  const per = (name) => (current[name] - previous[name]) / seconds;
  return {
    published: per("events_published"),
    deliveries: per("deliveries"),
    bytes: per("bytes_written"),
  };
}

// Charts: one canvas each, redrawn from the samples; sized for the device's pixels.
class Chart {
  constructor(canvasId, peakId, key, format) {
    this.canvas = $(canvasId);
    this.peak = $(peakId);
    this.key = key;
    this.format = format;
  }

  draw(samples, span) {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    const style = getComputedStyle(document.documentElement);
    context.clearRect(0, 0, width, height);

    const values = samples.map((sample) => sample[this.key]);
    const top = Math.max(1, ...values);
    this.peak.textContent = values.length ? "peak " + this.format(Math.max(0, ...values)) : "";
    const latest = values.length ? this.format(values[values.length - 1]) : "no data yet";
    canvas.setAttribute("aria-label", `${this.canvas.dataset.label || ""}latest ${latest}`);

    // grid: a line at half and at the top of the scale
    context.strokeStyle = style.getPropertyValue("--line").trim();
    context.lineWidth = ratio;
    context.beginPath();
    for (const fraction of [0, 0.5, 1]) {
      const y = Math.round(height - 1 - fraction * (height - 2)) + 0.5;
      context.moveTo(0, y);
      context.lineTo(width, y);
    }
    context.stroke();
    if (values.length < 2) return;

    const right = width - 2 * ratio; // keep the newest point's stroke inside the canvas
    const step = right / (span - 1);
    const x = (index) => right - (values.length - 1 - index) * step;
    const y = (value) => height - 1 - (value / top) * (height - 2 * ratio);
    context.beginPath();
    values.forEach((value, index) => (index ? context.lineTo(x(index), y(value)) : context.moveTo(x(index), y(value))));
    context.strokeStyle = style.getPropertyValue("--accent").trim();
    context.lineWidth = 2 * ratio;
    context.lineJoin = "round";
    context.stroke();
    context.lineTo(x(values.length - 1), height);
    context.lineTo(x(0), height);
    context.closePath();
    context.fillStyle = style.getPropertyValue("--chart-fill").trim();
    context.fill();
  }
}

const charts = [
  new Chart("published-chart", "published-peak", "published", formatRate),
  new Chart("deliveries-chart", "deliveries-peak", "deliveries", formatRate),
  new Chart("bytes-chart", "bytes-peak", "bytes", (value) => formatBytes(value) + "/s"),
];
for (const chart of charts) chart.canvas.dataset.label = chart.canvas.getAttribute("aria-label") + ": ";

const samples = [];
let previous = null;
let previousWorkers = new Map();

function drawCharts() {
  const span = Math.max(MIN_SPAN, samples.length);
  const minutes = Math.round(span / 60);
  $("chart-span").textContent = minutes === 1 ? "minute" : `${minutes} minutes`;
  for (const chart of charts) chart.draw(samples, span);
}

function showWorkers(workers) {
  const body = $("workers");
  const seen = new Map();
  const rows = workers.map((worker) => {
    seen.set(worker.worker, worker);
    const rate = rates(previousWorkers.get(worker.worker), worker);
    const cells = [
      String(worker.worker),
      String(worker.pid),
      integer.format(worker.streams_open),
      rate ? formatRate(rate.published) : "–",
      rate ? formatRate(rate.deliveries) : "–",
      rate ? formatBytes(rate.bytes) : "–",
      integer.format(worker.slow_consumers),
      integer.format(worker.resumes),
    ];
    const row = document.createElement("tr");
    cells.forEach((text, index) => {
      const cell = document.createElement(index ? "td" : "th");
      if (!index) cell.scope = "row";
      cell.textContent = text;
      row.append(cell);
    });
    return row;
  });
  body.replaceChildren(...rows);
  previousWorkers = seen;
}

function onStats(event) {
  let stats;
  try {
    stats = JSON.parse(event.data);
  } catch {
    return; // not ours to show
  }
  show("version", stats.version ? "v" + stats.version : "");
  show("streams-open", integer.format(stats.streams_open), stats.streams_open);
  const websockets = stats.ws_streams_open || 0;
  show(
    "streams-by-transport",
    `${integer.format(stats.streams_open - websockets)} SSE · ${integer.format(websockets)} WebSocket`,
    websockets,
  );
  show("slow-consumers", integer.format(stats.slow_consumers), stats.slow_consumers);
  show("resumes", integer.format(stats.resumes), stats.resumes);
  show("published-total", integer.format(stats.events_published), stats.events_published);
  show("uptime", formatDuration(stats.uptime), stats.uptime);
  show("latency-p50", formatLatency(stats.latency_p50, "p50"), stats.latency_p50);
  show("latency-p99", formatLatency(stats.latency_p99, "p99"), stats.latency_p99);
  const rate = rates(previous, stats);
  previous = stats;
  if (rate) {
    show("published-rate", formatRate(rate.published), rate.published);
    show("deliveries-rate", formatRate(rate.deliveries), rate.deliveries);
    show("bytes-rate", formatBytes(rate.bytes) + "/s", rate.bytes);
    samples.push(rate);
    if (samples.length > WINDOW) samples.shift();
  }
  drawCharts();
  showWorkers(stats.workers || []);
}

function liveState(source, element, texts) {
  const update = (state) => {
    element.dataset.state = state;
    element.textContent = texts[state];
  };
  source.addEventListener("open", () => update("live"));
  source.addEventListener("error", () => update(source.readyState === EventSource.CLOSED ? "down" : "connecting"));
}

const stats = new EventSource(STATS_URL);
stats.addEventListener("message", onStats);
liveState(stats, $("live-state"), { live: "live", connecting: "reconnecting…", down: "disconnected" });

let resizeQueued = false;
new ResizeObserver(() => {
  if (resizeQueued) return;
  resizeQueued = true;
  requestAnimationFrame(() => {
    resizeQueued = false;
    drawCharts();
  });
}).observe($("published-chart"));
drawCharts();

// Topic tester: one EventSource on the chosen topic, and a form that publishes to it.

let tester = null;
const listening = new Set();

function logEvent(event) {
  const item = document.createElement("li");
  item.dataset.id = event.lastEventId;
  item.dataset.event = event.type;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${new Date().toLocaleTimeString()}  ${event.type}  id ${event.lastEventId || "–"}\n`;
  const data = document.createElement("span");
  data.className = "data";
  data.textContent = event.data;
  item.append(meta, data);
  const log = $("tester-log");
  log.prepend(item);
  while (log.children.length > LOG_LIMIT) log.lastElementChild.remove();
}

function listen(name) {
  if (tester && !listening.has(name)) {
    listening.add(name);
    tester.addEventListener(name, logEvent);
  }
}

$("subscribe-form").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const input = $("tester-topic");
  if (!input.reportValidity()) return;
  const topic = input.value.trim();
  if (tester) tester.close();
  listening.clear();
  $("tester-log").replaceChildren();
  tester = new EventSource("/events?topic=" + encodeURIComponent(topic));
  for (const name of ["message", "rawsse-reset"]) listen(name);
  const eventName = $("publish-event").value.trim();
  if (eventName) listen(eventName);
  const state = $("tester-state");
  state.dataset.topic = topic;
  liveState(tester, state, {
    live: `Subscribed to ${topic}.`,
    connecting: `Connecting to ${topic}…`,
    down: `Refused: cannot subscribe to ${topic}.`,
  });
  state.dataset.state = "connecting";
  state.textContent = `Connecting to ${topic}…`;
});

$("publish-form").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const topic = $("tester-topic").value.trim();
  const state = $("publish-state");
  if (!topic) {
    state.textContent = "Choose a topic first.";
    return;
  }
  const body = new URLSearchParams({ topic, data: $("publish-data").value });
  const eventName = $("publish-event").value.trim();
  if (eventName) {
    body.set("event", eventName);
    listen(eventName); // so the tester shows events of that name too
  }
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  const token = $("publish-token").value;
  if (token) headers.Authorization = "Bearer " + token;
  state.classList.remove("error");
  state.textContent = "Publishing…";
  try {
    const answer = await fetch("/publish", { method: "POST", headers, body });
    const text = await answer.text();
    if (!answer.ok) throw new Error(`${answer.status}: ${text.trim()}`);
    state.textContent = `Published as ${JSON.parse(text).id}.`;
  } catch (error) {
    state.classList.add("error");
    state.textContent = "Not published: " + error.message;
  }
});
