// Two small charts drawn by hand as SVG (no library): a sparkline and daily bars.  Both
// stretch to the width of their card; their labels are plain text around them.
import { h, svg } from "./core.js";

const stretched = (width, height) => ({
  viewBox: `0 0 ${width} ${height}`, width: "100%", height, preserveAspectRatio: "none", role: "img",
});

// One line per series over the same points (e.g. completed and failed per minute).
export function sparkline(series, { width = 600, height = 70 } = {}) {
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const points = (values) => values.map((v, i) => {
    const x = values.length > 1 ? (i * width) / (values.length - 1) : 0;
    return `${x.toFixed(1)},${(height - 2 - (v / top) * (height - 6)).toFixed(1)}`;
  }).join(" ");
  return h("div", { class: "chart" },
    h("div", { class: "chart-top muted" }, `peak ${top} per minute`),
    svg("svg", stretched(width, height),
      svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }),
      series.map((s) => svg("polyline", { points: points(s.values), class: s.kind }))));
}

// Completed (green) with failed (red) stacked on top, one bar per day.
export function dailyBars(days, completed, failed, { width = 300, height = 70 } = {}) {
  const top = Math.max(1, ...days.map((_, i) => completed[i] + failed[i]));
  const slot = width / days.length;
  const scale = (n) => (n / top) * (height - 4);
  const bars = days.map((day, i) => {
    const x = i * slot + slot * 0.1;
    const ok = scale(completed[i]);
    const bad = scale(failed[i]);
    return svg("g", {},
      svg("title", {}, `${day}: ${completed[i]} completed, ${failed[i]} failed`),
      svg("rect", { x, y: height - 1 - ok, width: slot * 0.8, height: ok, class: "completed" }),
      svg("rect", { x, y: height - 1 - ok - bad, width: slot * 0.8, height: bad, class: "failed" }));
  });
  return h("div", { class: "chart" },
    h("div", { class: "chart-top muted" }, `at most ${top} per day`),
    svg("svg", stretched(width, height),
      svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }), bars),
    h("div", { class: "chart-axis muted" }, h("span", {}, days[0] || ""), h("span", {}, days[days.length - 1] || "")));
}
