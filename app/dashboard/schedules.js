// Schedules: every job, its plugins, its next fire in the scheduler's time zone, its
// last fire and outcome, and a "Run now" button (the latest trading day, trigger manual).
import { actionButton, alertBox, api, badge, coalesce, h, live, shortId, table, time } from "./core.js";

export function render(root) {
  const notice = h("div", { id: "schedule-notice" });
  const list = h("div", {});
  root.append(h("h1", {}, "Schedules"), notice, list);
  const load = async () => {
    try {
      const body = await api("/api/v1/schedules");
      list.replaceChildren(
        table(["job", "trigger", "plugins", "next run", "last fire", "outcome", ""],
          body.items.map((job) => row(job, notice, load)), "No schedule job: no plugin is scheduled."),
        calendar(body.calendar));
    } catch (error) {
      list.replaceChildren(alertBox(error));
    }
  };
  const refresh = coalesce(load, 1000);
  const off = live.on((name) => { if (name === "execution" || name === "resync") refresh(); });
  load();
  return off;
}

function row(job, notice, reload) {
  const fire = job.last_fire;
  const run = actionButton("Run now", async () => {
    const out = await api(`/api/v1/schedules/${encodeURIComponent(job.name)}/run`, { method: "POST" });
    notice.replaceChildren(h("div", { class: "alert alert-info", id: "fired" },
      `${out.job} fired for ${out.trade_date}: ${out.tasks} task(s) in execution `,
      h("a", { href: `#/executions/${encodeURIComponent(out.execution_id)}` }, shortId(out.execution_id)),
      ". Follow them on ", h("a", { href: "#/tasks" }, "Tasks"), "."));
    reload();
  }, { primary: true, enabled: job.plugins.length > 0 && job.enabled !== false,
       onError: (error) => notice.replaceChildren(alertBox(error)) });
  run.dataset.job = job.name;
  return h("tr", { dataset: { job: job.name } },
    h("td", {}, h("strong", {}, job.name), job.enabled === false ? [" ", badge("disabled", "cancelled")] : ""),
    h("td", { class: "mono nowrap" }, job.trigger),
    h("td", {}, job.plugins.join(", ")),
    h("td", { class: "nowrap" }, job.next_run_at ? `${time(job.next_run_at, job.timezone)} (${job.timezone})` : "—"),
    h("td", { class: "nowrap" }, fire ? [time(fire.fired_at || fire.slot_at, job.timezone), " ", h("span", { class: "muted" }, fire.trigger)] : "never"),
    h("td", {}, fire ? [badge(fire.outcome), " ",
      fire.execution_id ? h("a", { href: `#/executions/${encodeURIComponent(fire.execution_id)}` }, shortId(fire.execution_id)) : "",
      fire.reason ? h("div", { class: "muted" }, fire.reason) : ""] : ""),
    h("td", {}, run));
}

function calendar(cal) {
  if (!cal) return "";
  const where = cal.source === "tushare"
    ? `TuShare ${cal.exchange} calendar (${cal.start} to ${cal.end}, fetched ${time(cal.fetched_at)})`
    : "the offline calendar (weekends and public holidays)";
  return h("p", { class: "muted" }, `Trading days from ${where}.`);
}
