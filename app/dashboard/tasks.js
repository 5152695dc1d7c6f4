// Tasks: filtered by status, plugin, execution and date, newest first, page by page.
// Rows follow the live feed: progress in place, the page re-read when tasks move.
import {
  alertBox, api, badge, between, coalesce, dates, h, live, progressBar, setProgress, shortId, table, time,
} from "./core.js";

const FILTERS = ["status", "plugin", "execution_id", "since", "until"];
const STATUSES = ["", "pending", "running", "retrying", "completed", "failed", "cancelled"];

export function render(root, { params }) {
  const chosen = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const cursors = [""]; // where each page seen so far starts
  const list = h("div", { id: "task-list" });
  root.append(h("h1", {}, "Tasks"), filterForm(chosen), list);

  const load = async () => {
    const query = new URLSearchParams({ limit: "50" });
    for (const [k, v] of Object.entries(chosen)) if (v) query.set(k, v);
    if (cursors[cursors.length - 1]) query.set("cursor", cursors[cursors.length - 1]);
    try {
      const page = await api(`/api/v1/tasks?${query}`);
      list.replaceChildren(
        table(["task", "plugin", "status", "progress", "attempt", "dates", "created", "took", "error"],
          page.items.map(row), "No task matches."),
        pager(page.next_cursor));
    } catch (error) {
      list.replaceChildren(alertBox(error));
    }
  };
  const pager = (next) => h("div", { class: "pager" },
    h("button", { disabled: cursors.length === 1, onclick: () => { cursors.pop(); load(); } }, "← Newer"),
    h("span", { class: "muted" }, `page ${cursors.length}`),
    h("button", { disabled: !next, onclick: () => { cursors.push(next); load(); } }, "Older →"));

  const refresh = coalesce(load, 700);
  const off = live.on((name, data) => {
    if (name === "progress") {
      const tr = list.querySelector(`tr[data-task-id="${CSS.escape(data.task_id)}"]`);
      if (tr) setProgress(tr, data.progress);
    } else {
      refresh();
    }
  });
  load();
  return off;
}

function row(task) {
  return h("tr", { dataset: { taskId: task.task_id, status: task.status } },
    h("td", { class: "mono" }, h("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}`, title: task.task_id },
      shortId(task.task_id))),
    h("td", {}, task.plugin_name),
    h("td", {}, badge(task.status)),
    h("td", {}, progressBar(task.status === "completed" ? 100 : task.progress)),
    h("td", {}, `${task.attempt}/${task.max_attempts}`),
    h("td", { class: "nowrap" }, dates(task)),
    h("td", { class: "nowrap" }, time(task.created_at)),
    h("td", { class: "nowrap" }, task.started_at ? between(task.started_at, task.completed_at) : ""),
    h("td", { class: "error-text" }, task.last_error_type || ""));
}

function filterForm(chosen) {
  const field = (name, control) => h("label", {}, name.replace("_", " "), control);
  const status = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, selected: s === chosen.status }, s || "any")));
  const plugin = h("select", { name: "plugin" }, h("option", { value: "" }, "any"));
  api("/api/v1/plugins").then((body) => {
    for (const p of body.plugins) plugin.append(h("option", { value: p.name, selected: p.name === chosen.plugin }, p.name));
  }).catch(() => {});
  const execution = h("input", { name: "execution_id", value: chosen.execution_id, placeholder: "execution id", size: 24 });
  const since = h("input", { type: "date", name: "since", value: chosen.since });
  const until = h("input", { type: "date", name: "until", value: chosen.until });
  const apply = (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [k, control] of Object.entries({ status, plugin, execution_id: execution, since, until })) {
      if (control.value) query.set(k, control.value);
    }
    location.hash = `#/tasks${query.size ? `?${query}` : ""}`;
  };
  return h("form", { class: "filters", onsubmit: apply },
    field("status", status), field("plugin", plugin), field("execution", execution),
    field("since", since), field("until", until),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("a", { href: "#/tasks" }, "clear"));
}
