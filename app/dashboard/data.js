// Data: per warehouse table, the latest day loaded and the trading days of the last
// N days without data, one square per trading day, so a gap shows at a glance.
import { NO_CLICKHOUSE, alertBox, api, badge, coalesce, h, live, state, table, time } from "./core.js";

export function render(root, { params }) {
  if (!state.clickhouse) {
    root.append(h("h1", {}, "Data"), h("div", { class: "alert alert-info" }, NO_CLICKHOUSE));
    return () => {};
  }
  const days = params.get("days") || "30";
  const input = h("input", { type: "number", min: 1, max: 366, value: days, name: "days" });
  const view = h("div", { id: "coverage" });
  root.append(h("h1", {}, "Data"),
    h("form", {
      class: "filters",
      onsubmit: (event) => { event.preventDefault(); location.hash = `#/data?days=${input.value}`; },
    }, h("label", {}, "last days", input), h("button", { type: "submit", class: "primary" }, "Show")),
    view);
  const load = async () => {
    try {
      const body = await api(`/api/v1/data/coverage?days=${encodeURIComponent(days)}`);
      view.replaceChildren(
        h("p", { class: "muted" }, `${body.trading_days.length} trading days from ${body.start} to ${body.end} `
          + `(${body.calendar.source} ${body.calendar.exchange} calendar).`),
        table(["table", "plugins", "latest day", "last load", "missing trading days", `the last ${body.days} days`],
          body.tables.map((t) => row(t, body.trading_days))));
    } catch (error) {
      view.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 2000);
  const off = live.on((name, data) => {
    if (name === "resync" || (name === "task" && data.status === "completed")) refresh();
  });
  load();
  return off;
}

function row(t, tradingDays) {
  let latest = h("span", { class: "muted" }, "—");
  let missing = h("span", { class: "muted" }, t.exists ? `no date column: ${t.rows} rows` : "not created yet");
  let strip = "";
  if (t.exists && t.date_column) {
    latest = t.latest ? h("strong", { class: "latest" }, t.latest) : h("span", { class: "muted" }, "empty");
    const loaded = new Set(t.loaded);
    const gaps = new Set(t.missing);
    missing = t.missing.length
      ? h("div", {}, badge(`${t.missing.length} missing`, "failed"), " ",
        h("div", { class: "chips" }, t.missing.slice(-12).map((d) => h("span", { class: "chip" }, d)),
          t.missing.length > 12 ? h("span", { class: "muted" }, `+${t.missing.length - 12} more`) : ""))
      : badge("complete", "ok");
    strip = h("div", { class: "days" }, tradingDays.map((d) => {
      const kind = loaded.has(d) ? "loaded" : gaps.has(d) ? "missing" : "not_yet";
      return h("span", { class: `day ${kind}`, title: `${d}: ${kind.replace("_", " ")}` });
    }));
  }
  return h("tr", { dataset: { table: t.table } },
    h("td", { class: "mono" }, t.table),
    h("td", {}, t.plugins.join(", ")),
    h("td", { class: "nowrap" }, latest),
    h("td", { class: "nowrap" }, t.last_loaded_at ? time(t.last_loaded_at) : "—"),
    h("td", {}, missing),
    h("td", {}, strip));
}
