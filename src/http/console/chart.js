// A small line chart of hourly counts, drawn as SVG elements by the page: no charting
// library, no inline style (the CSP forbids it), colours from the stylesheet's classes.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** `series`: [{ key, label, values }] over `hours` (ISO strings). */
export function lineChart(hours, series, title) {
  const width = 720;
  const height = 240;
  const pad = { left: 40, right: 24, top: 12, bottom: 28 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => pad.left + (hours.length <= 1 ? innerW : (i * innerW) / (hours.length - 1));
  const y = (v) => pad.top + innerH - (v * innerH) / max;

  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "chart-title",
    class: "chart",
    preserveAspectRatio: "xMidYMid meet",
  });
  root.append(svg("title", { id: "chart-title" }, title));
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v)));
  }
  hours.forEach((iso, i) => {
    if (i % 6 !== 0 && i !== hours.length - 1) return;
    const t = new Date(iso);
    const label = `${String(t.getHours()).padStart(2, "0")}:00`;
    root.append(svg("text", { x: x(i), y: height - 8, class: "axis", "text-anchor": "middle" }, label));
  });
  series.forEach((s) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points, class: `line ${s.key}`, fill: "none" }));
    s.values.forEach((v, i) => {
      if (v === 0) return;
      const dot = svg("circle", { cx: x(i), cy: y(v), r: 3, class: `dot ${s.key}` });
      dot.append(svg("title", {}, `${s.label}: ${v} (hour from ${hours[i]})`));
      root.append(dot);
    });
  });
  return root;
}
