// One task: its state (live), progress, checkpoint, error, captured output, timings,
// its attempts from the audit history, and the cancel / retry buttons.
import {
  NO_CLICKHOUSE, actionButton, alertBox, api, badge, between, coalesce, dates, h, live, progressBar, setProgress,
  state, table, time,
} from "./core.js";

const ACTIVE = new Set(["pending", "running", "retrying"]);
const ENDED_BADLY = new Set(["failed", "cancelled"]);

export function renderItem(root, { id }) {
  const head = h("div", {});
  const notice = h("div", {});
  const body = h("div", {});
  root.append(head, notice, body);
  const path = `/api/v1/tasks/${encodeURIComponent(id)}`;

  let waits = 0; // re-reads of the audit while an ended attempt is not in it yet
  const showAttempts = async (task) => {
    const [el, seen] = await attempts(id);
    const slot = body.querySelector("#attempts");
    if (slot) slot.replaceChildren(el);
    const ended = !["pending", "running"].includes(task.status) && task.attempt > 0;
    if (ended && seen && !seen.has(task.attempt) && waits < 10) {
      waits += 1;
      setTimeout(() => { if (body.isConnected) showAttempts(task); }, 1500);
    }
  };
  const load = async () => {
    try {
      const task = await api(path);
      head.replaceChildren(header(task, notice, load));
      body.replaceChildren(...details(task));
      waits = 0;
      showAttempts(task);
    } catch (error) {
      head.replaceChildren(h("h1", {}, "Task ", h("span", { class: "mono" }, id)));
      body.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 300);
  const catchUp = coalesce(load, 3000); // the message and checkpoint travel with the task
  const off = live.on((name, data) => {
    if (name === "progress" && data.task_id === id) {
      catchUp();
      setProgress(body, data.progress);
      const records = body.querySelector("#records");
      if (records) records.textContent = String(data.records);
      const pct = body.querySelector("#percent");
      if (pct) pct.textContent = `${data.progress.toFixed(1)}%`;
    } else if (name === "resync" || (name === "task" && data.task_id === id)) {
      refresh();
    }
  });
  load();
  return off;
}

function header(task, notice, reload) {
  const say = (error) => notice.replaceChildren(alertBox(error));
  const cancel = actionButton("Cancel", async () => {
    const out = await api(`/api/v1/tasks/${encodeURIComponent(task.task_id)}/cancel`, { method: "POST" });
    notice.replaceChildren(h("div", { class: "alert alert-info" },
      out.outcome === "cancelled" ? "Cancelled." : "Cancel requested: its worker stops it."));
    reload();
  }, { danger: true, enabled: ACTIVE.has(task.status), onError: say });
  const retry = actionButton("Retry", async () => {
    const fresh = await api(`/api/v1/tasks/${encodeURIComponent(task.task_id)}/retry`, { method: "POST" });
    location.hash = `#/tasks/${encodeURIComponent(fresh.task_id)}`;
  }, { enabled: ENDED_BADLY.has(task.status) && !task.retried_by, onError: say });
  cancel.id = "cancel";
  retry.id = "retry";
  return h("div", {},
    h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
    h("h1", {}, `${task.plugin_name} `, badge(task.status), " ", h("span", { class: "mono muted" }, task.task_id)),
    h("div", { class: "actions" }, cancel, retry));
}

function link(kind, id) {
  return id ? h("a", { href: `#/${kind}/${encodeURIComponent(id)}`, class: "mono" }, id) : "—";
}

function details(task) {
  const pct = task.status === "completed" ? 100 : task.progress;
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === "" || v === null ? "—" : v)]));
  const out = [
    h("div", { class: "cols" },
      h("div", { class: "card", id: "progress-card" },
        h("h2", {}, "Progress"),
        progressBar(pct, true),
        h("p", {}, h("span", { id: "percent" }, `${Number(pct).toFixed(1)}%`), " · ",
          h("span", { id: "records" }, String(task.records_processed)), " records"),
        kv([["message", task.progress_message], ["checkpoint", task.checkpoint],
          ["cancel requested", task.cancel_requested ? "yes" : "no"]])),
      h("div", { class: "card" }, h("h2", {}, "Timings"),
        kv([["created", time(task.created_at)], ["started", time(task.started_at)],
          ["ended", time(task.completed_at)], ["took", task.started_at ? between(task.started_at, task.completed_at) : ""],
          ["next run", time(task.next_run_at)], ["updated", time(task.updated_at)]]))),
    h("div", { class: "cols" },
      h("div", { class: "card" }, h("h2", {}, "Work"),
        kv([["type", task.task_type], ["dates", dates(task)], ["params", JSON.stringify(task.params)],
          ["priority", task.priority_name], ["attempt", `${task.attempt} of ${task.max_attempts}`],
          ["timeout", `${task.timeout_seconds} s`], ["trigger", task.trigger], ["worker", task.worker],
          ["queue", task.queue]])),
      h("div", { class: "card" }, h("h2", {}, "Links"),
        kv([["execution", link("executions", task.execution_id)], ["retry of", link("tasks", task.retry_of)],
          ["retried by", link("tasks", task.retried_by)],
          ["waits for", task.depends_on.length ? task.depends_on.map((d) => [link("tasks", d), " "]) : ""]]))),
  ];
  if (task.last_error_type || task.error_message) {
    out.push(h("div", { class: "card", id: "error" }, h("h2", {}, "Error ", badge(task.last_error_type || "error", "failed")),
      h("pre", { class: "output" }, task.error_message || "")));
  }
  out.push(h("h2", {}, "Output", task.output_attempt ? ` of attempt ${task.output_attempt}` : ""),
    task.output ? h("pre", { class: "output", id: "output" }, task.output,
      task.output_bytes > task.output.length ? `\n… (${task.output_bytes} bytes printed; the last part is kept)` : "")
      : h("p", { class: "muted" }, "Nothing printed."));
  out.push(h("h2", {}, "Attempts"), h("div", { id: "attempts" }, h("p", { class: "muted" }, "Loading…")));
  return out;
}

// The attempts' table, and the attempt numbers it holds.
async function attempts(id) {
  if (!state.clickhouse) return [h("p", { class: "muted" }, NO_CLICKHOUSE), null];
  try {
    const body = await api(`/api/v1/history?task_id=${encodeURIComponent(id)}&limit=50`);
    return [table(["attempt", "outcome", "error", "started", "ended", "took", "records", "worker"],
      body.items.map((a) => h("tr", {},
        h("td", {}, a.attempt), h("td", {}, badge(a.status)),
        h("td", {}, a.error_type ? `${a.error_type}: ${a.error_message}` : ""),
        h("td", { class: "nowrap" }, time(a.started_at)), h("td", { class: "nowrap" }, time(a.finished_at)),
        h("td", {}, a.duration_ms === null ? "" : `${(a.duration_ms / 1000).toFixed(2)} s`),
        h("td", {}, a.records), h("td", { class: "mono" }, a.worker))),
      "No attempt has ended yet (the audit history is written within seconds of an end)."),
    new Set(body.items.map((a) => a.attempt))];
  } catch (error) {
    return [h("p", { class: "muted" }, `The audit history is not available here: ${error.message}`), null];
  }
}
