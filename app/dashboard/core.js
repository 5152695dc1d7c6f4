// What every page uses: the API client (with the bearer token), the live event feed,
// building elements and formatting values.  No library: the browser's own APIs.

const TOKEN_KEY = "stockq.token";

export const state = {
  timezone: "Asia/Shanghai", // the scheduler's zone (GET /api/v1/stats says which)
  access: "full",            // "read" when the token may only read (buttons disabled)
  clickhouse: true,          // this sidecar answers the history and data routes
};

export const NO_CLICKHOUSE = "This sidecar has no ClickHouse (a separate stockq api without "
  + "STOCKQ_CLICKHOUSE_URL): the audit history and the warehouse are read by the sidecar of "
  + "stockq run, or one configured with a ClickHouse server.";

// ------------------------------------------------------------------ the token
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
}

let asking = null; // one prompt at a time, however many requests were refused

export function askToken(reason) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const remember = document.getElementById("token-remember");
  document.getElementById("token-reason").textContent = reason;
  input.value = "";
  asking = new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
      (remember.checked ? localStorage : sessionStorage).setItem(TOKEN_KEY, input.value.trim());
      dialog.close();
      asking = null;
      resolve();
    }, { once: true });
  });
  dialog.showModal();
  return asking;
}

// ------------------------------------------------------------------ the API
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

// A JSON route.  401 asks for the token and tries again; another error status throws
// ApiError with the sidecar's code and message, unless it is in `accept` (then the body).
export async function api(path, { method = "GET", body, accept = [] } = {}) {
  for (;;) {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      await askToken(token() ? "That token was refused; enter the sidecar's API token."
                             : "This sidecar needs its API token (STOCKQ_API_TOKEN).");
      continue;
    }
    const data = await resp.json().catch(() => null);
    if (!resp.ok && !accept.includes(resp.status)) {
      const err = (data && data.error) || {};
      throw new ApiError(resp.status, err.code || "http_error", err.message || resp.statusText);
    }
    return data;
  }
}

// ------------------------------------------------------------------ live events
// GET /api/v1/events read with fetch(): EventSource cannot send the Authorization
// header.  Reconnects with backoff and resumes with Last-Event-ID; pages listen with
// live.on((name, data) => ...) and re-read what they show on "resync".
export const live = {
  listeners: new Set(),
  lastId: "",
  events: 0,
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  },
  emit(name, data) {
    for (const fn of [...this.listeners]) fn(name, data);
  },
};

function setLive(stateName, text) {
  const el = document.getElementById("live");
  el.dataset.state = stateName;
  el.textContent = text;
}

function onEvent(name, data) {
  if (name === "hello") {
    setLive(data.redis === "ok" ? "live" : "redis-down", data.redis === "ok" ? "live" : "Redis unavailable");
    if (!data.resumed) live.emit("resync", { reason: "connected" });
    return;
  }
  if (name === "redis") {
    setLive(data.status === "ok" ? "live" : "redis-down", data.status === "ok" ? "live" : "Redis unavailable");
    return;
  }
  if (name !== "resync") {
    live.events += 1;
    document.getElementById("live").dataset.events = String(live.events);
  }
  live.emit(name, data);
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment (keep-alive)
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data += text;
        else if (field === "id") live.lastId = text;
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function followEvents() {
  let delay = 1000;
  for (;;) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (live.lastId) extra["Last-Event-ID"] = live.lastId;
      const resp = await fetch("/api/v1/events", { headers: headers(extra), cache: "no-store" });
      if (resp.status === 401) {
        await askToken("This sidecar needs its API token (STOCKQ_API_TOKEN).");
        continue;
      }
      if (resp.ok) {
        delay = 1000;
        await readEvents(resp.body);
      }
    } catch {
      // the sidecar went away (a restart): try again below
    }
    setLive("reconnecting", "reconnecting…");
    await sleep(delay);
    delay = Math.min(delay * 2, 15000);
  }
}

// At most one call of fn per `ms` (the last request wins): many events, one refresh.
export function coalesce(fn, ms) {
  let timer = null;
  return () => {
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        fn();
      }, ms);
    }
  };
}

// ------------------------------------------------------------------ elements
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

function setAttributes(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function progressBar(percent, big = false) {
  const bar = h("div", { class: "bar" });
  bar.style.width = `${Math.max(0, Math.min(100, Number(percent) || 0))}%`;
  return h("div", { class: big ? "progress big" : "progress", title: `${Number(percent || 0).toFixed(1)}%` }, bar);
}

export function setProgress(container, percent) {
  const bar = container.querySelector(".bar");
  if (bar) bar.style.width = `${Math.max(0, Math.min(100, Number(percent) || 0))}%`;
}

export function table(columns, rows, empty = "Nothing here.") {
  const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("div", { class: "table" },
    h("table", {}, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))), h("tbody", {}, body)));
}

export function card(label, value, sub) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), sub ? h("div", { class: "sub" }, sub) : null);
}

export function alertBox(error) {
  const text = error instanceof ApiError ? `${error.message} (${error.code})` : String(error.message || error);
  return h("div", { class: "alert alert-error", role: "alert" }, text);
}

// A button that runs `action` once at a time; disabled for a read-only token.
export function actionButton(label, action, { danger = false, primary = false, enabled = true, onError } = {}) {
  const readOnly = state.access === "read";
  const button = h("button", {
    class: danger ? "danger" : primary ? "primary" : null,
    disabled: !enabled || readOnly,
    title: readOnly ? "this token may only read" : null,
  }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      if (onError) onError(error);
    } finally {
      button.disabled = !enabled || state.access === "read";
    }
  });
  return button;
}

// ------------------------------------------------------------------ formatting
const formats = new Map();

function formatter(zone) {
  if (!formats.has(zone)) {
    formats.set(zone, new Intl.DateTimeFormat("sv-SE", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    }));
  }
  return formats.get(zone);
}

// An ISO time (UTC when it names no offset) in the scheduler's time zone.
export function time(iso, zone = state.timezone) {
  if (!iso) return "";
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`;
  const when = new Date(text);
  return Number.isNaN(when.getTime()) ? iso : formatter(zone).format(when);
}

export function seconds(total) {
  if (total === null || total === undefined || Number.isNaN(total)) return "";
  if (total < 1) return `${Math.round(total * 1000)} ms`;
  if (total < 90) return `${total.toFixed(total < 10 ? 1 : 0)} s`;
  if (total < 5400) return `${Math.round(total / 60)} min`;
  if (total < 172800) return `${(total / 3600).toFixed(1)} h`;
  return `${Math.round(total / 86400)} d`;
}

export function between(startIso, endIso) {
  if (!startIso) return "";
  const fix = (s) => (/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`);
  const end = endIso ? new Date(fix(endIso)) : new Date();
  return seconds((end - new Date(fix(startIso))) / 1000);
}

export function shortId(id) {
  return id && id.length > 12 ? id.slice(0, 8) : id || "";
}

export function day(iso) {
  return iso ? iso.slice(0, 10) : "";
}

export function dates(task) {
  if (task.start_date || task.end_date) return `${task.start_date}–${task.end_date}`;
  const list = task.trade_dates || [];
  if (list.length <= 2) return list.join(", ");
  return `${list[0]} … ${list[list.length - 1]} (${list.length})`;
}
