// Overview: queue depths, recent outcomes, throughput, workers, the scheduler and
// the health of Redis and ClickHouse.  Re-read when tasks move (live events) and every
// 10 s (heartbeat ages move on their own).
import { sparkline } from "./charts.js";
import { alertBox, api, badge, card, coalesce, h, live, seconds, table, time } from "./core.js";

export function render(root) {
  const view = h("div", {});
  root.append(h("h1", {}, "Overview"), view);
  const load = async () => {
    try {
      const [stats, health, schedules] = await Promise.all([
        api("/api/v1/stats"), api("/health", { accept: [503] }), api("/api/v1/schedules")]);
      view.replaceChildren(...page(stats, health, schedules));
    } catch (error) {
      view.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 1000);
  const off = live.on((name) => { if (name !== "progress") refresh(); });
  const timer = setInterval(refresh, 10000);
  load();
  return () => { off(); clearInterval(timer); };
}

function page(stats, health, schedules) {
  const q = stats.queue;
  const r = stats.recent;
  const t = stats.throughput;
  return [
    h("div", { class: "grid" },
      card("Ready", q.ready_total, `high ${q.ready["0"]} · normal ${q.ready["1"]} · low ${q.ready["2"]}`),
      card("Running", q.running),
      card("Retrying", q.retrying, `${q.delayed} waiting out a backoff`),
      card("Pending", q.pending, "ready or waiting on dependencies"),
      card("Completed", r.hour.completed, `last hour · ${r.day.completed} in 24 h`),
      card("Failed", r.hour.failed, `last hour · ${r.day.failed} in 24 h`)),
    h("div", { class: "cols" },
      h("div", { class: "card" }, h("h2", {}, "Throughput, last hour (per minute)"),
        sparkline([{ values: t.completed, kind: "spark" }, { values: t.failed, kind: "spark-failed" }]),
        h("div", { class: "sub muted" }, `completed (blue) and failed (red) since ${time(t.start)}; `
          + `${r.hour.cancelled} cancelled in the last hour`)),
      healthCard(health)),
    h("h2", {}, "Workers"),
    workers(health.workers),
    h("h2", {}, "Scheduler"),
    schedulers(health.scheduler),
    nextFires(schedules),
  ];
}

function healthCard(health) {
  const row = (name, part, detail) => h("tr", {}, h("td", {}, name),
    h("td", {}, part ? badge(part.status) : badge("unknown")), h("td", { class: "muted" }, detail || ""));
  const redis = health.redis || {};
  const click = health.clickhouse || {};
  const outbox = health.outbox || {};
  return h("div", { class: "card", id: "health" },
    h("h2", {}, "Health ", badge(health.status)),
    h("table", {}, h("tbody", {},
      row("Redis", redis, redis.status === "ok" ? `${redis.latency_ms} ms` : redis.error),
      row("ClickHouse", click, click.status === "ok" ? (click.embedded ? "embedded" : "server") : click.error),
      row("Audit outbox", outbox, outbox.backlog !== undefined ? `${outbox.backlog} rows waiting` : ""),
      row("Scheduler", health.scheduler, health.scheduler ? `${health.scheduler.live} live` : ""))),
    [...(health.reasons || []), ...(health.warnings || [])].map((w) => h("p", { class: "sub" }, w)));
}

function workers(part) {
  if (!part) return h("p", { class: "muted" }, "Redis is unavailable.");
  const rows = part.items.map((w) => h("tr", {},
    h("td", { class: "mono" }, w.worker_id), h("td", {}, w.host), h("td", {}, w.pid),
    h("td", {}, w.concurrency), h("td", {}, w.running), h("td", {}, w.processed),
    h("td", {}, (w.plugins || []).join(", ") || h("span", { class: "muted" }, "any")),
    h("td", { class: "nowrap" }, `${seconds(w.seconds_since_heartbeat)} ago`)));
  return table(["worker", "host", "pid", "concurrency", "running", "processed", "plugins", "heartbeat"],
    rows, "No live worker: queued tasks wait until one starts.");
}

function schedulers(part) {
  if (!part) return h("p", { class: "muted" }, "Redis is unavailable.");
  const rows = part.items.map((s) => h("tr", {},
    h("td", { class: "mono" }, s.scheduler_id), h("td", {}, s.host), h("td", {}, s.pid),
    h("td", {}, s.jobs), h("td", { class: "nowrap" }, `${seconds(s.seconds_since_heartbeat)} ago`)));
  return table(["scheduler", "host", "pid", "jobs", "heartbeat"], rows,
    "No live scheduler: scheduled syncs do not fire.");
}

function nextFires(schedules) {
  const rows = schedules.items.map((job) => h("tr", {},
    h("td", {}, h("a", { href: "#/schedules" }, job.name)),
    h("td", { class: "nowrap" }, job.next_run_at ? time(job.next_run_at, job.timezone) : "—"),
    h("td", {}, job.last_fire ? badge(job.last_fire.outcome) : h("span", { class: "muted" }, "never"))));
  return table(["job", `next fire (${schedules.items[0] ? schedules.items[0].timezone : ""})`, "last outcome"], rows,
    "No schedule job.");
}
