// A small line chart of hourly counts, drawn as SVG elements by the page: no charting
// library, no inline style (the CSP forbids it), colours from the stylesheet's classes.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A round step between y ticks (1, 2 or 5 times a power of ten, at least 1: the counts
 * are whole) that reaches `max` in about five steps. */
function yStep(max) {
  const raw = max / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  return Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw));
}

/** The label of an hour tick: its local time, or the date at midnight. */
function hourLabel(t) {
  const pad = (n) => String(n).padStart(2, "0");
  return t.getHours() === 0 && t.getMinutes() === 0
    ? t.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : `${pad(t.getHours())}:${pad(t.getMinutes())}`;
}

/** `series`: [{ key, label, values }] over `hours` (ISO strings). */
export function lineChart(hours, series, title) {
  const width = 720;
  const height = 240;
  const pad = { left: 40, right: 24, top: 12, bottom: 28 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const highest = Math.max(1, ...series.flatMap((s) => s.values));
  const step = yStep(highest);
  // The axis ends on a tick, so the ticks split it evenly.
  const max = Math.ceil(highest / step) * step;
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
  for (let v = 0; v <= max; v += step) {
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v)));
  }
  // Ticks every six local hours (daily over longer spans), past the first hour: that one
  // is the partial hour the window starts in, the same clock time as the last.
  const every = hours.length > 48 ? 24 : 6;
  hours.forEach((iso, i) => {
    const t = new Date(iso);
    if (i === 0 || t.getHours() % every !== 0) return;
    root.append(svg("text", { x: x(i), y: height - 8, class: "axis", "text-anchor": "middle" }, hourLabel(t)));
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
