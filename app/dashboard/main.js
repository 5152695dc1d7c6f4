// The dashboard's entry point: a router over the URL's #fragment (#/tasks,
// #/tasks/<id>, ...), the navigation, the live feed and what the token may do.
import { api, followEvents, h, state } from "./core.js";
import * as data from "./data.js";
import * as executions from "./executions.js";
import * as history from "./history.js";
import * as overview from "./overview.js";
import * as schedules from "./schedules.js";
import * as task from "./task.js";
import * as tasks from "./tasks.js";

const pages = {
  overview: { list: overview },
  tasks: { list: tasks, item: task },
  executions: { list: executions, item: executions },
  schedules: { list: schedules },
  history: { list: history },
  data: { list: data },
};

let leave = null; // the current page's cleanup

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "").split("/").filter(Boolean).map(decodeURIComponent);
  const name = pages[parts[0]] ? parts[0] : "overview";
  const page = parts[1] ? pages[name].item : pages[name].list;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  if (leave) leave();
  const main = document.getElementById("main");
  main.replaceChildren();
  main.dataset.page = parts[1] && page === pages[name].item ? `${name}-item` : name;
  document.title = `stockq · ${name}`;
  leave = (parts[1] ? page.renderItem : page.render)(main, { id: parts[1], params: new URLSearchParams(query || "") });
}

async function start() {
  // what this token may do (GET /api/v1/session) and the scheduler's time zone
  const session = await api("/api/v1/session");
  state.access = session.access;
  state.timezone = session.timezone || state.timezone;
  state.clickhouse = session.clickhouse;
  const access = document.getElementById("access");
  access.hidden = session.access !== "read";
  access.textContent = "read-only token";
  document.getElementById("footer").replaceChildren(
    h("span", {}, `Times in ${state.timezone}. `),
    h("a", { href: "/openapi.json" }, "OpenAPI"), " · ",
    h("span", {}, `namespace ${session.namespace}`));
  window.addEventListener("hashchange", route);
  route();
  followEvents();
}

start().catch((error) => {
  document.getElementById("main").replaceChildren(
    h("div", { class: "alert alert-error", role: "alert" }, `The dashboard cannot start: ${error.message}`));
});
