// Executions: the list (newest first, by status and trigger) and one execution with
// its plugins in run order, what each waits for, and the retry / cancel buttons.
import {
  actionButton, alertBox, api, badge, between, coalesce, h, live, progressBar, setProgress, shortId, table, time,
} from "./core.js";

const STATUSES = ["", "pending", "running", "completed", "failed", "cancelled"];

export function render(root, { params }) {
  const status = params.get("status") || "";
  const cursors = [""];
  const list = h("div", { id: "execution-list" });
  const select = h("select", {
    onchange: () => { location.hash = select.value ? `#/executions?status=${select.value}` : "#/executions"; },
  }, STATUSES.map((s) => h("option", { value: s, selected: s === status }, s || "any")));
  root.append(h("h1", {}, "Executions"), h("div", { class: "filters" }, h("label", {}, "status", select)), list);

  const load = async () => {
    const query = new URLSearchParams({ limit: "50" });
    if (status) query.set("status", status);
    if (cursors[cursors.length - 1]) query.set("cursor", cursors[cursors.length - 1]);
    try {
      const page = await api(`/api/v1/executions?${query}`);
      list.replaceChildren(
        table(["execution", "status", "trigger", "group", "dates", "plugins", "done", "created", "took"],
          page.items.map(row), "No execution yet."),
        h("div", { class: "pager" },
          h("button", { disabled: cursors.length === 1, onclick: () => { cursors.pop(); load(); } }, "← Newer"),
          h("span", { class: "muted" }, `page ${cursors.length}`),
          h("button", { disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(); } }, "Older →")));
    } catch (error) {
      list.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 1000);
  const off = live.on((name) => { if (name !== "progress") refresh(); });
  load();
  return off;
}

function row(e) {
  const ended = e.completed + e.failed + e.cancelled;
  return h("tr", { dataset: { executionId: e.execution_id, status: e.status } },
    h("td", { class: "mono" }, h("a", { href: `#/executions/${encodeURIComponent(e.execution_id)}`, title: e.execution_id },
      shortId(e.execution_id))),
    h("td", {}, badge(e.status)), h("td", {}, e.trigger_type), h("td", {}, e.group_name),
    h("td", { class: "nowrap" }, e.date_range), h("td", {}, e.plugins.length),
    h("td", { class: "nowrap" }, `${e.completed}/${e.total}`, e.failed ? h("span", { class: "error-text" }, ` · ${e.failed} failed`) : "",
      e.cancelled ? ` · ${e.cancelled} cancelled` : "", progressBar(e.total ? (100 * ended) / e.total : 0)),
    h("td", { class: "nowrap" }, time(e.created_at)),
    h("td", { class: "nowrap" }, e.started_at ? between(e.started_at, e.completed_at) : ""));
}

export function renderItem(root, { id }) {
  const head = h("div", {});
  const notice = h("div", {});
  const body = h("div", {});
  root.append(head, notice, body);
  const path = `/api/v1/executions/${encodeURIComponent(id)}`;
  let taskIds = new Set();
  const load = async () => {
    try {
      const e = await api(path);
      taskIds = new Set(e.task_ids);
      head.replaceChildren(header(e, notice, load));
      body.replaceChildren(...steps(e));
    } catch (error) {
      head.replaceChildren(h("h1", {}, "Execution ", h("span", { class: "mono" }, id)));
      body.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 500);
  const off = live.on((name, data) => {
    if (name === "progress" && taskIds.has(data.task_id)) {
      const li = body.querySelector(`li[data-task-id="${CSS.escape(data.task_id)}"]`);
      if (li) setProgress(li, data.progress);
    } else if (name === "resync" || (name === "task" && taskIds.has(data.task_id))) {
      refresh();
    }
  });
  load();
  return off;
}

function header(e, notice, reload) {
  const say = (error) => notice.replaceChildren(alertBox(error));
  const active = e.status === "pending" || e.status === "running";
  const retry = actionButton("Retry failed", async () => {
    const out = await api(`/api/v1/executions/${encodeURIComponent(e.execution_id)}/retry`, { method: "POST" });
    notice.replaceChildren(h("div", { class: "alert alert-info" }, `${out.task_ids.length} task(s) queued again.`));
    reload();
  }, { enabled: e.failed > 0 || e.cancelled > 0, onError: say });
  const cancel = actionButton("Cancel", async () => {
    const out = await api(`/api/v1/executions/${encodeURIComponent(e.execution_id)}/cancel`, { method: "POST" });
    notice.replaceChildren(h("div", { class: "alert alert-info" },
      `${out.cancelled} cancelled, ${out.cancel_requested} being stopped, ${out.already_ended} had ended.`));
    reload();
  }, { danger: true, enabled: active, onError: say });
  return h("div", {},
    h("p", {}, h("a", { href: "#/executions" }, "← Executions")),
    h("h1", {}, `${e.group_name || e.trigger_type} `, badge(e.status), " ", h("span", { class: "mono muted" }, e.execution_id)),
    h("p", { class: "muted" }, `${e.trigger_type} · ${e.date_range || "no dates"} · created ${time(e.created_at)}`,
      e.completed_at ? ` · ended ${time(e.completed_at)}` : ""),
    h("div", { class: "actions" }, retry, cancel));
}

// The plugins in run order (the order they were submitted: dependencies first), each
// with what it waits for.
function steps(e) {
  const plugin = new Map(e.tasks.map((t) => [t.task_id, t.plugin_name]));
  const items = e.tasks.map((t) => h("li", { dataset: { taskId: t.task_id, status: t.status } },
    h("a", { href: `#/tasks/${encodeURIComponent(t.task_id)}` }, t.plugin_name),
    badge(t.status),
    progressBar(t.status === "completed" ? 100 : t.progress),
    h("span", { class: "muted" }, t.depends_on.length ? `after ${t.depends_on.map((d) => plugin.get(d) || d).join(", ")}` : "first"),
    h("span", { class: t.last_error_type ? "error-text" : "muted" }, t.last_error_type || (t.started_at ? between(t.started_at, t.completed_at) : ""))));
  const out = [
    h("div", { class: "grid" },
      ...[["total", e.total], ["completed", e.completed], ["failed", e.failed], ["cancelled", e.cancelled],
        ["pending", e.pending]].map(([k, v]) => h("div", { class: "card" }, h("div", { class: "label" }, k), h("div", { class: "value" }, v)))),
    h("h2", {}, "Plugins, in run order"),
    h("ol", { class: "steps" }, items),
  ];
  if (e.errors.length) {
    out.push(h("h2", {}, "Errors"), table(["plugin", "status", "error"], e.errors.map((x) => h("tr", {},
      h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(x.task_id)}` }, x.plugin_name)), h("td", {}, badge(x.status)),
      h("td", {}, `${x.last_error_type}: ${x.error_message}`)))));
  }
  return out;
}
