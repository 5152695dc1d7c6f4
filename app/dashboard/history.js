// History: attempt ends from the ClickHouse audit, filterable, and per plugin a daily
// chart of completed and failed attempts.
import { dailyBars } from "./charts.js";
import { NO_CLICKHOUSE, alertBox, api, badge, coalesce, h, live, shortId, state, table, time } from "./core.js";

const FILTERS = ["plugin", "status", "since", "until"];
const STATUSES = ["", "completed", "failed", "retrying", "cancelled"];

export function render(root, { params }) {
  if (!state.clickhouse) {
    root.append(h("h1", {}, "History"), h("div", { class: "alert alert-info" }, NO_CLICKHOUSE));
    return () => {};
  }
  const chosen = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const charts = h("div", { class: "charts", id: "daily" });
  const list = h("div", {});
  root.append(h("h1", {}, "History"), h("h2", {}, "Completed and failed attempts per day (14 days)"), charts,
    filterForm(chosen), list);

  const load = async () => {
    const query = new URLSearchParams({ limit: "200" });
    for (const [k, v] of Object.entries(chosen)) if (v) query.set(k, v);
    const daily = new URLSearchParams({ days: "14" });
    if (chosen.plugin) daily.set("plugin", chosen.plugin);
    try {
      const [rows, days] = await Promise.all([api(`/api/v1/history?${query}`), api(`/api/v1/history/daily?${daily}`)]);
      const names = Object.keys(days.plugins);
      charts.replaceChildren(...(names.length ? names.map((name) => {
        const s = days.plugins[name];
        const total = (xs) => xs.reduce((a, b) => a + b, 0);
        return h("div", { class: "card" }, h("h2", {}, name),
          dailyBars(days.days, s.completed, s.failed),
          h("div", { class: "sub muted" }, `${total(s.completed)} completed, ${total(s.failed)} failed`));
      }) : [h("p", { class: "muted" }, "No attempt ended in these days.")]));
      list.replaceChildren(table(
        ["ended", "task", "attempt", "plugin", "outcome", "error", "took", "records", "trigger"],
        rows.items.map((a) => h("tr", {},
          h("td", { class: "nowrap" }, time(a.finished_at)),
          h("td", { class: "mono" }, h("a", { href: `#/tasks/${encodeURIComponent(a.task_id)}` }, shortId(a.task_id))),
          h("td", {}, a.attempt), h("td", {}, a.plugin), h("td", {}, badge(a.status)),
          h("td", {}, a.error_type ? `${a.error_type}: ${a.error_message}` : ""),
          h("td", {}, a.duration_ms === null ? "" : `${(a.duration_ms / 1000).toFixed(2)} s`),
          h("td", {}, a.records), h("td", {}, a.trigger))),
        "No attempt matches (rows reach the audit within seconds of an end)."));
    } catch (error) {
      list.replaceChildren(alertBox(error));
    }
  };
  // the audit is written by the flusher about a second after an end
  const refresh = coalesce(load, 3000);
  const off = live.on((name, data) => {
    if (name === "resync" || (name === "task" && ["completed", "failed", "retrying", "cancelled"].includes(data.status))) refresh();
  });
  load();
  return off;
}

function filterForm(chosen) {
  const plugin = h("select", { name: "plugin" }, h("option", { value: "" }, "any"));
  api("/api/v1/plugins").then((body) => {
    for (const p of body.plugins) plugin.append(h("option", { value: p.name, selected: p.name === chosen.plugin }, p.name));
  }).catch(() => {});
  const status = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, selected: s === chosen.status }, s || "any")));
  const since = h("input", { type: "date", value: chosen.since });
  const until = h("input", { type: "date", value: chosen.until });
  const apply = (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [k, control] of Object.entries({ plugin, status, since, until })) if (control.value) query.set(k, control.value);
    location.hash = `#/history${query.size ? `?${query}` : ""}`;
  };
  return h("form", { class: "filters", onsubmit: apply },
    h("label", {}, "plugin", plugin), h("label", {}, "outcome", status),
    h("label", {}, "since", since), h("label", {}, "until", until),
    h("button", { type: "submit", class: "primary" }, "Filter"), h("a", { href: "#/history" }, "clear"));
}
