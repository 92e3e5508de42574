// Small SVG charts: horizontal grouped bars, vertical bars and a gauge.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

// hbars draws one row per label with a bar per series:
// series = [{name, cls, values: {label: number}}]; values share one scale.
export function hbars(labels, series, opts = {}) {
  const rowH = 8 + 10 * series.length, labelW = opts.labelWidth || 170, width = opts.width || 560;
  const plotW = width - labelW - 60;
  const height = labels.length * rowH + 28;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" });
  if (opts.title) svg.append(el("title", {}, opts.title));
  let maxV = 0;
  for (const s of series) for (const l of labels) maxV = Math.max(maxV, s.values[l] || 0);
  maxV = maxV || 1;
  labels.forEach((l, i) => {
    const y = i * rowH + 4;
    svg.append(el("text", { x: labelW - 6, y: y + rowH / 2 + 3, "text-anchor": "end", class: "label" }, l));
    series.forEach((s, j) => {
      const v = s.values[l] || 0;
      const w = Math.max(v > 0 ? 1 : 0, (v / maxV) * plotW);
      const by = y + j * 10;
      const r = el("rect", { x: labelW, y: by, width: w, height: 8, class: "bar " + s.cls });
      r.append(el("title", {}, `${s.name} ${l}: ${opts.percent ? (v * 100).toFixed(1) + "%" : fmt(v)}`));
      svg.append(r);
      svg.append(el("text", { x: labelW + w + 4, y: by + 7, class: "value" }, opts.percent ? (v * 100).toFixed(1) + "%" : fmt(v)));
    });
  });
  // Legend.
  let x = labelW;
  const ly = height - 10;
  for (const s of series) {
    svg.append(el("rect", { x, y: ly - 8, width: 10, height: 8, class: "bar " + s.cls }));
    svg.append(el("text", { x: x + 14, y: ly, class: "label" }, s.name));
    x += 20 + s.name.length * 7;
  }
  return svg;
}

// vbars draws values (one per label) as columns, with an optional marker
// line at `mark`.
export function vbars(labels, values, opts = {}) {
  const width = opts.width || 560, height = opts.height || 150, pad = 22;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" });
  if (opts.title) svg.append(el("title", {}, opts.title));
  const maxV = Math.max(1e-9, ...values, opts.mark || 0);
  const bw = (width - pad) / labels.length;
  labels.forEach((l, i) => {
    const h = (values[i] / maxV) * (height - 2 * pad);
    const r = el("rect", { x: pad + i * bw + 1, y: height - pad - h, width: Math.max(1, bw - 2), height: h, class: "bar " + (opts.cls || "base") + (i === opts.highlight ? " hl" : "") });
    r.append(el("title", {}, `${l}: ${fmt(values[i])}`));
    svg.append(r);
    if (labels.length <= 24 && i % (labels.length > 12 ? 3 : 1) === 0) {
      svg.append(el("text", { x: pad + i * bw + bw / 2, y: height - 6, "text-anchor": "middle", class: "label" }, l));
    }
  });
  if (opts.mark) {
    const y = height - pad - (opts.mark / maxV) * (height - 2 * pad);
    svg.append(el("line", { x1: pad, x2: width, y1: y, y2: y, class: "mark" }));
    svg.append(el("text", { x: width - 4, y: y - 3, "text-anchor": "end", class: "label" }, opts.markLabel || fmt(opts.mark)));
  }
  return svg;
}

// gauge shows a score against its threshold on one scale.
export function gauge(score, threshold) {
  const width = 220, height = 26, maxV = Math.max(score, threshold, 1e-9) * 1.15;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart gauge", role: "img" });
  svg.append(el("title", {}, `score ${fmt(score)} vs threshold ${fmt(threshold)}`));
  svg.append(el("rect", { x: 0, y: 6, width, height: 12, class: "track" }));
  svg.append(el("rect", { x: 0, y: 6, width: (score / maxV) * width, height: 12, class: "bar " + (score >= threshold ? "over" : "base") }));
  const tx = (threshold / maxV) * width;
  svg.append(el("line", { x1: tx, x2: tx, y1: 2, y2: 22, class: "mark" }));
  return svg;
}
