/**
 * The dashboard page: `measurement` events from the server, plotted as
 * moving line charts on canvases (one per series), redrawn every frame.
 * The x axis is the server's clock: the last WINDOW_MS milliseconds.
 */
import { openSSE } from "/sse/client.js";

const WINDOW_MS = 20_000;
const SERIES = [
  { key: "temperature", label: "Temperature", unit: "°C", color: "#ff7a59" },
  { key: "humidity", label: "Humidity", unit: "%", color: "#4fc3f7" },
  { key: "load", label: "Load average (1 min)", unit: "", color: "#b39ddb" },
];

/** What the page holds; `window.dashboard` for a look from the console. */
const dashboard = (window.dashboard = {
  points: [], // {seq, t, values}, oldest first
  received: 0,
  frames: 0,
  windowStart: 0, // server time (ms) at the chart's left edge
  offset: 0, // server clock minus ours (ms)
  rate: 0,
});

const $ = (id) => document.getElementById(id);

function setStatus(text, down = false) {
  $("status").textContent = text;
  $("status").classList.toggle("down", down);
}

// One panel per series: a title, the latest value, a canvas.
const panels = SERIES.map((series) => {
  const panel = document.createElement("section");
  panel.className = "panel";
  panel.dataset.series = series.key;
  const title = document.createElement("h2");
  const label = document.createElement("span");
  label.textContent = series.label;
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = "–";
  title.append(label, value);
  const canvas = document.createElement("canvas");
  panel.append(title, canvas);
  $("panels").append(panel);
  return { series, canvas, value };
});

/** Keep one sample (in order, once) and the last WINDOW_MS and a bit. */
function add(sample) {
  const points = dashboard.points;
  if (points.length && sample.seq <= points[points.length - 1].seq && sample.t <= points[points.length - 1].t) return;
  points.push(sample);
  dashboard.received += 1;
  dashboard.offset = sample.t - Date.now();
  const oldest = sample.t - WINDOW_MS - 2000;
  while (points.length && points[0].t < oldest) points.shift();
  if (sample.viewers !== undefined) $("viewers").textContent = String(sample.viewers);
  $("received").textContent = String(dashboard.received);
}

// Updates a second, over the last two seconds.
const arrivals = [];
function countArrival() {
  const now = performance.now();
  arrivals.push(now);
  while (arrivals.length && arrivals[0] < now - 2000) arrivals.shift();
}
setInterval(() => {
  const now = performance.now();
  while (arrivals.length && arrivals[0] < now - 2000) arrivals.shift();
  dashboard.rate = arrivals.length / 2;
  $("rate").textContent = dashboard.rate.toFixed(1);
}, 250);

function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { context, width: canvas.clientWidth, height: canvas.clientHeight };
}

function draw() {
  // Lag a little behind the newest sample, so the line never runs dry.
  const end = Date.now() + dashboard.offset - 150;
  const start = end - WINDOW_MS;
  dashboard.windowStart = start;
  const visible = dashboard.points.filter((p) => p.t >= start - 1000);
  for (const { series, canvas, value } of panels) {
    const { context: g, width, height } = fit(canvas);
    const left = 44;
    const bottom = height - 18;
    g.clearRect(0, 0, width, height);
    const values = visible.map((p) => p.values[series.key]);
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (!values.length) [low, high] = [0, 1];
    if (high - low < 1e-6) [low, high] = [low - 0.5, high + 0.5];
    const pad = (high - low) * 0.15;
    low -= pad;
    high += pad;
    const x = (t) => left + ((t - start) / WINDOW_MS) * (width - left);
    const y = (v) => 6 + (1 - (v - low) / (high - low)) * (bottom - 6);
    // Grid: three values, and a line every 5 s that moves with time.
    g.strokeStyle = "#2a3346";
    g.fillStyle = "#7d879c";
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    for (let i = 0; i <= 2; i += 1) {
      const v = low + ((high - low) * i) / 2;
      g.beginPath();
      g.moveTo(left, y(v));
      g.lineTo(width, y(v));
      g.stroke();
      g.fillText(v.toFixed(1), 4, y(v) + 4);
    }
    for (let t = Math.ceil(start / 5000) * 5000; t <= end; t += 5000) {
      g.beginPath();
      g.moveTo(x(t), 6);
      g.lineTo(x(t), bottom);
      g.stroke();
      g.fillText(new Date(t).toLocaleTimeString(), x(t) - 24, height - 4);
    }
    // The line, clipped to the plot.
    g.save();
    g.beginPath();
    g.rect(left, 0, width - left, height);
    g.clip();
    g.strokeStyle = series.color;
    g.lineWidth = 2;
    g.beginPath();
    visible.forEach((p, i) => {
      const px = x(p.t);
      const py = y(p.values[series.key]);
      if (i === 0) g.moveTo(px, py);
      else g.lineTo(px, py);
    });
    g.stroke();
    g.restore();
    const last = visible[visible.length - 1];
    if (last) value.textContent = `${last.values[series.key].toFixed(2)} ${series.unit}`;
  }
  dashboard.frames += 1;
  requestAnimationFrame(draw);
}

openSSE({
  url: "/sse",
  events: {
    backlog: (samples) => samples.forEach(add),
    measurement(sample) {
      add(sample);
      countArrival();
    },
  },
  onopen: () => setStatus("live"),
  onerror(error) {
    if (error instanceof Event) setStatus("reconnecting…", true);
  },
  onshutdown: () => setStatus("the server stopped; reconnecting…", true),
});
requestAnimationFrame(draw);
