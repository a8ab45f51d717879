// The leaderboard page: /v1/arena/leaderboard as a table and as intervals drawn in SVG.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const fmt = (x) => x.toFixed(1);

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawTable(models) {
    const body = $("board").querySelector("tbody");
    body.textContent = "";
    models.forEach((m, i) => {
      const tr = document.createElement("tr");
      tr.dataset.model = m.model;
      const cells = [String(i + 1), m.model, fmt(m.bt), `${fmt(m.bt_lo)} – ${fmt(m.bt_hi)}`, fmt(m.elo),
                     String(m.battles), String(m.wins)];
      cells.forEach((c, k) => tr.appendChild(camelid.el("td", k >= 2 ? { class: "num" } : {}, c)));
      body.appendChild(tr);
    });
  }

  function drawPlot(models) {
    const plot = $("plot");
    plot.textContent = "";
    const rowH = 26, left = 200, right = 30, top = 10, width = 760;
    const height = top + rowH * models.length + 30;
    plot.setAttribute("viewBox", `0 0 ${width} ${height}`);
    plot.setAttribute("width", "100%");
    if (!models.length) return;
    let lo = Math.min(...models.map((m) => m.bt_lo)), hi = Math.max(...models.map((m) => m.bt_hi));
    if (hi - lo < 1) { lo -= 10; hi += 10; }
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
    const x = (v) => left + (v - lo) / (hi - lo) * (width - left - right);
    const axisY = top + rowH * models.length + 5;
    plot.appendChild(svg("line", { class: "axis", x1: left, x2: width - right, y1: axisY, y2: axisY }));
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 2)));
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
      plot.appendChild(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: top, y2: axisY }));
      plot.appendChild(svg("text", { class: "tick", x: x(t), y: axisY + 16, "text-anchor": "middle" }, String(Math.round(t))));
    }
    models.forEach((m, i) => {
      const y = top + rowH * i + rowH / 2;
      plot.appendChild(svg("text", { x: left - 10, y: y + 4, "text-anchor": "end" }, m.model));
      plot.appendChild(svg("line", { class: "interval", x1: x(m.bt_lo), x2: x(m.bt_hi), y1: y, y2: y }));
      const dot = svg("circle", { class: "point", cx: x(m.bt), cy: y, r: 5 });
      dot.appendChild(svg("title", {}, `${m.model}: ${fmt(m.bt)} (${fmt(m.bt_lo)} – ${fmt(m.bt_hi)})`));
      plot.appendChild(dot);
    });
  }

  async function load() {
    try {
      const lb = await camelid.json("GET", "/v1/arena/leaderboard");
      $("summary").textContent = lb.n_battles === 1 ? "1 vote" : `${lb.n_battles} votes`;
      $("summary").classList.remove("error");
      drawTable(lb.models);
      drawPlot(lb.models);
      document.body.dataset.loaded = String(lb.n_battles);
    } catch (e) {
      $("summary").textContent = "Cannot load the leaderboard: " + e.message;
      $("summary").classList.add("error");
    }
  }

  $("refresh").addEventListener("click", load);
  load();
});
