// tickwork web UI: live updates over server-sent events, confirmations, and the
// dashboard's chart. No framework, no build step, no inline script (the CSP forbids it).
"use strict";

(function () {
  const status = document.getElementById("live-status");

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live " + cls;
  }

  // Re-read this page and swap in its live regions ([data-live] with an id), at most
  // once per second whatever the rate of events. Forms outside the regions are kept.
  let pending = false;
  let last = 0;
  async function refresh() {
    if (pending) return;
    pending = true;
    const wait = Math.max(0, 1000 - (Date.now() - last));
    setTimeout(async function () {
      try {
        const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          const fresh = doc.getElementById(old.id);
          if (fresh) old.replaceWith(fresh);
        });
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      } catch (e) {
        // the next event tries again
      } finally {
        last = Date.now();
        pending = false;
      }
    }, wait);
  }

  function subscribe() {
    const url = document.body.dataset.liveEvents;
    if (!url || !window.EventSource || !document.querySelector("[data-live]")) return;
    const source = new EventSource(url);
    source.onopen = function () { setStatus("live", "on"); };
    source.onerror = function () { setStatus("offline", "off"); };
    source.onmessage = function () {
      document.body.dataset.events = String(Number(document.body.dataset.events || 0) + 1);
      refresh();
    };
    // Events were dropped (this page fell behind): what it shows may be stale.
    source.addEventListener("lost", function () { window.location.reload(); });
  }

  // <form data-confirm="..."> asks before it posts.
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // -- the dashboard's chart: runs per second and mean lateness, hand-drawn SVG ------------
  const SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 4, 8, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function draw(box, samples) {
    const width = box.clientWidth || 600;
    const height = 180;
    const pad = { left: 44, right: 44, top: 10, bottom: 22 };
    const svg = el("svg", { viewBox: "0 0 " + width + " " + height, role: "img" });
    if (samples.length < 2) {
      box.replaceChildren();
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "Collecting samples… (one every 2 s while this page is open)";
      box.appendChild(p);
      return;
    }
    const t0 = samples[0].t;
    const t1 = samples[samples.length - 1].t;
    const span = Math.max(t1 - t0, 1);
    const runsMax = niceMax(Math.max.apply(null, samples.map(function (s) { return s.runs_per_s; })));
    const lateMax = niceMax(Math.max.apply(null, samples.map(function (s) { return s.lateness_ms; })));
    const x = function (t) { return pad.left + (width - pad.left - pad.right) * (t - t0) / span; };
    const y = function (v, max) { return pad.top + (height - pad.top - pad.bottom) * (1 - v / max); };
    for (let i = 0; i <= 4; i++) {
      const gy = pad.top + (height - pad.top - pad.bottom) * i / 4;
      svg.appendChild(el("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: "grid" }));
      const left = el("text", { x: pad.left - 6, y: gy + 3, "text-anchor": "end", class: "axis" });
      left.textContent = formatNumber(runsMax * (1 - i / 4));
      svg.appendChild(left);
      const right = el("text", { x: width - pad.right + 6, y: gy + 3, class: "axis" });
      right.textContent = formatNumber(lateMax * (1 - i / 4));
      svg.appendChild(right);
    }
    const ago = el("text", { x: pad.left, y: height - 6, class: "axis" });
    ago.textContent = span < 120 ? "-" + Math.round(span) + " s" : "-" + Math.round(span / 60) + " min";
    svg.appendChild(ago);
    const nowLabel = el("text", { x: width - pad.right, y: height - 6, "text-anchor": "end", class: "axis" });
    nowLabel.textContent = "now";
    svg.appendChild(nowLabel);
    const line = function (key, max, color) {
      const points = samples.map(function (s) { return x(s.t).toFixed(1) + "," + y(s[key], max).toFixed(1); });
      svg.appendChild(el("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round" }));
    };
    line("lateness_ms", lateMax, "#c98a00");
    line("runs_per_s", runsMax, "#2f5bd3");
    box.replaceChildren(svg);
    box.dataset.points = String(samples.length);
  }

  function formatNumber(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (v >= 10 || v === 0) return String(Math.round(v));
    return String(Number(v.toFixed(2)));
  }

  function chart() {
    const box = document.getElementById("chart");
    if (!box) return;
    const url = box.dataset.samples;
    async function tick() {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (response.ok) draw(box, (await response.json()).samples);
      } catch (e) {
        // try again at the next tick
      }
    }
    tick();
    setInterval(tick, 2000);
  }

  subscribe();
  chart();
})();
