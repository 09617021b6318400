// Remora's admin UI: polls the admin API (GET /status) every second and
// renders every upstream, its nodes and canary split, readiness and the
// local application's registration. Rates are computed from the counters
// of successive polls.
//
// Everything shown comes from the API and is put into the page as text or
// attribute values, never as HTML: service names, node ids and metadata
// are written by whoever registers instances.
//
// The page is updated in place: an upstream keeps its article and a node
// its row from one poll to the next, and only the cells whose text changed
// are written, so that thousands of nodes cost little per poll and focus,
// selection and a pointer on a button survive it.
"use strict";

const TOKEN_KEY = "remora-admin-token";
const POLL_MS = 1000;

// Counters of the previous poll, for rates: by "upstream\0node" the node's
// requests and failures, by upstream the canary pools' requests; with the
// time they were read.
let previous = { at: 0, nodes: new Map(), pools: new Map() };
let timer = 0;
let polling = false;
let pollAgain = false;
// waitingForToken: the API needs a token the page does not have; nothing
// is polled until one is entered.
let waitingForToken = false;
// The rendered upstreams by name: { article, summary, tbody, rows } with
// rows by node key: { tr, cells, values }.
const views = new Map();
let viewSeq = 0;

class AuthError extends Error {}

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

function setToken(v) {
  try {
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // storage refused (private mode, policy): the token is not kept
  }
}

// api calls the admin API with the token, if any. A 401 throws AuthError;
// a failure to connect throws what fetch threw; other answers return
// {status, body} with the JSON body (or null).
async function api(method, path) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const res = await fetch(path, { method, headers, cache: "no-store", credentials: "same-origin" });
  if (res.status === 401) throw new AuthError("the admin API refused the token");
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    // not JSON: leave body null
  }
  return { status: res.status, body };
}

// errorText is what an answer that is not a success says: the API's own
// error, or the status.
function errorText(res) {
  const e = res.body && typeof res.body === "object" && typeof res.body.error === "string" ? res.body.error : "";
  return "HTTP " + res.status + (e ? ": " + e : "");
}

// el builds an element: attributes, then children, strings as text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// patch makes the children of parent those of fresh, reusing the nodes
// parent has where they are of the same kind, so that what the user is on
// stays where it is. Only small trees are patched this way.
function patch(parent, fresh) {
  const olds = [...parent.childNodes];
  const news = [...fresh.childNodes];
  news.forEach((f, i) => {
    const o = olds[i];
    if (!o) {
      parent.appendChild(f);
    } else if (o.nodeType !== f.nodeType || o.nodeName !== f.nodeName) {
      parent.replaceChild(f, o);
    } else if (o.nodeType === Node.TEXT_NODE) {
      if (o.data !== f.data) o.data = f.data;
    } else if (o.nodeType === Node.ELEMENT_NODE) {
      for (const a of [...o.attributes]) if (!f.hasAttribute(a.name)) o.removeAttribute(a.name);
      for (const a of f.attributes) if (o.getAttribute(a.name) !== a.value) o.setAttribute(a.name, a.value);
      patch(o, f);
    }
  });
  for (let i = olds.length - 1; i >= news.length; i--) olds[i].remove();
}

// dl renders [term, description] pairs, skipping empty descriptions.
function dl(pairs) {
  return el("dl", {}, pairs.filter(([, d]) => d !== undefined && d !== null && d !== "")
    .map(([t, d]) => [el("dt", {}, t), el("dd", {}, d)]));
}

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return el("time", { datetime: iso, title: iso }, isNaN(d) ? iso : d.toLocaleTimeString());
}

// left is a future time as what is left of it.
function left(iso, now) {
  if (!iso) return "";
  const s = (new Date(iso).getTime() - now) / 1000;
  return s > 0 ? "in " + s.toFixed(1) + " s" : "now";
}

function rate(v) {
  return v === null ? "–" : v.toFixed(v < 10 ? 1 : 0);
}

function pct(v) {
  return (100 * v).toFixed(v > 0 && v < 0.1 ? 1 : 0) + " %";
}

// delta is the growth of a counter since the previous poll per second,
// or null without a previous value (or after the counter was reset).
function delta(now, before, dt) {
  if (typeof now !== "number" || typeof before !== "number" || dt <= 0 || now < before) return null;
  return (now - before) / dt;
}

function str(v) {
  return v === undefined || v === null ? "" : String(v);
}

// setStatus says what is wrong in the live status line, which screen
// readers announce, or clears it; the time of the last update goes to a
// line that is not announced every second.
function setStatus(text, bad) {
  const s = document.getElementById("status");
  document.body.dataset.api = bad ? "error" : "ok";
  if (bad) {
    if (s.textContent !== text) s.textContent = text;
    s.classList.add("bad");
    return;
  }
  if (s.textContent) s.textContent = "";
  s.classList.remove("bad");
  document.getElementById("updated").textContent = text;
}

function say(text, bad) {
  const r = document.getElementById("action-result");
  r.textContent = text;
  r.classList.toggle("bad", !!bad);
}

function renderReadiness(b) {
  const r = document.getElementById("readiness");
  const waiting = Array.isArray(b.waiting_for) && b.waiting_for.length ? " (waiting for " + b.waiting_for.join(", ") + ")" : "";
  r.textContent = b.draining ? "draining" : b.ready ? "ready" : "not ready" + waiting;
  r.dataset.state = b.draining ? "draining" : b.ready ? "ready" : "not_ready";
  document.getElementById("drain").disabled = !!b.draining;
  document.getElementById("undrain").disabled = !b.draining;
}

function renderRegistration(r) {
  const body = document.getElementById("registration-body");
  if (!r) {
    patch(body, el("div", {}, el("p", {}, "Nothing is registered: the configuration has no register: block.")));
    return;
  }
  const side = r.registry_side;
  patch(body, el("div", {}, dl([
    ["Registry", r.registry],
    ["Service", r.service],
    ["Instance", r.id],
    ["Address", str(r.address) + ":" + str(r.port)],
    ["Application health", r.app_healthy ? "healthy" : "failing" + (r.last_check_error ? ": " + r.last_check_error : "")],
    ["Registered", r.registered ? "yes, weight " + r.weight : r.withdrawn ? "no: withdrawn by the drain" : "no"],
    ["Held by the registry", el("span", { "data-up": String(!!r.up) }, r.up ? "yes" : "no")],
    ["Registry side", side ? [side.up ? "up" : "down", " since ", time(side.since),
      side.last_error ? ["; last error ", time(side.last_error_at), ": ", side.last_error] : ""] : ""],
    ["Re-registrations", str(r.reregistrations)],
  ])));
}

function renderCanary(u, c, dt) {
  const nodes = u.nodes || [];
  const idle = c.default && !c.rolled_back && !c.available && !nodes.some((n) => n.pool === "canary");
  if (idle) {
    return el("section", { class: "canary", "data-rolled-back": "false", "aria-label": "Canary of " + u.name },
      el("p", {}, "Canary: no canary nodes (the default rule: instances labelled canary=true, weight from canary-weight)."));
  }
  const requests = c.requests || {};
  const errors = c.errors || {};
  const before = previous.pools.get(u.name);
  const rs = delta(requests.stable, before && before.stable, dt);
  const rc = delta(requests.canary, before && before.canary, dt);
  let split;
  if (rs !== null && rc !== null && rs + rc > 0) {
    split = ["stable ", pct(rs / (rs + rc)), ", canary ", pct(rc / (rs + rc)), " (last poll, ", rate(rs + rc), " req/s)"];
  } else {
    const total = (requests.stable || 0) + (requests.canary || 0);
    split = total > 0
      ? ["stable ", pct(requests.stable / total), ", canary ", pct(requests.canary / total), " (since start, ", String(total), " requests)"]
      : "no requests yet";
  }
  const selector = Object.entries(c.selector || {}).map(([k, v]) => k + "=" + v).join(", ");
  const rollback = c.rolled_back
    ? [el("strong", { class: "bad" }, "rolled back"), " at ", time(c.rolled_back_at), ": ", c.rollback_reason]
    : "none";
  return el("section", { class: "canary", "data-rolled-back": String(!!c.rolled_back), "aria-label": "Canary of " + u.name },
    el("h4", {}, "Canary"),
    dl([
      ["Weight", str(c.weight) + " % (from " + str(c.weight_from) + ")"],
      ["Rule", c.default ? "default (instances labelled canary=true)" : "canary: block"],
      ["Selector", selector],
      ["Canary nodes available", str(c.available)],
      ["Traffic split", split],
      ["Errors", "stable " + (errors.stable || 0) + ", canary " + (errors.canary || 0)],
      ["Automatic rollback", rollback],
    ]),
    el("button", {
      type: "button", "data-action": "resume", disabled: !c.rolled_back, "aria-label": "Resume canary of " + u.name,
    }, "Resume canary"),
  );
}

function renderLocality(l) {
  return el("section", { class: "locality", "aria-label": "Locality" },
    el("h4", {}, "Locality"),
    dl([
      ["Zone", l.zone],
      ["Kept in the zone", pct(l.share || 0)],
      ["Available in the zone", str(l.local_available) + " of " + str(l.zone_available)],
    ]));
}

const NODE_COLUMNS = ["Node", "Address", "Pool", "State", "Eject reason", "Ejected until", "In flight", "Requests/s", "Failures/s", "Latency", "Weight", "Metadata"];
// Cells that may hold long text from the registry: clipped, whole in the
// title.
const CLIPPED = new Set([0, 1, 11]);
const NUMERIC = new Set([6, 7, 8, 9, 10]);

// nodeValues is what a node's row shows: one string per column.
function nodeValues(u, n, dt, now) {
  const before = previous.nodes.get(u.name + "\0" + n.id);
  const req = delta(n.requests, before && before.requests, dt);
  const fail = delta(n.failures, before && before.failures, dt);
  const meta = Object.entries(n.metadata || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => k + "=" + v).join("\n");
  return [
    str(n.id),
    str(n.address) + ":" + str(n.port),
    str(n.pool),
    str(n.state).replaceAll("_", " "),
    str(n.eject_reason),
    left(n.ejected_until, now),
    str(n.in_flight),
    rate(req),
    rate(fail),
    n.latency_ms ? Number(n.latency_ms).toFixed(1) + " ms" : "–",
    str(n.weight),
    meta,
  ];
}

function newRow() {
  const tr = document.createElement("tr");
  const cells = NODE_COLUMNS.map((_, i) => {
    const c = document.createElement(i === 0 ? "th" : "td");
    if (i === 0) c.setAttribute("scope", "row");
    if (NUMERIC.has(i)) c.className = "num";
    if (i === 3) c.className = "state";
    if (CLIPPED.has(i)) c.classList.add("clip");
    if (i === 11) c.classList.add("meta");
    tr.appendChild(c);
    return c;
  });
  return { tr, cells, values: [], id: null, nodeState: null, title: [] };
}

function updateRow(row, n, values) {
  const id = str(n.id);
  const st = str(n.state);
  if (row.id !== id) {
    row.tr.dataset.node = id;
    row.id = id;
  }
  if (row.nodeState !== st) {
    row.tr.dataset.state = st;
    row.tr.className = "state-" + st;
    row.nodeState = st;
  }
  values.forEach((v, i) => {
    if (row.values[i] !== v) {
      row.cells[i].textContent = v;
      if (CLIPPED.has(i)) row.cells[i].title = v;
      row.values[i] = v;
    }
  });
  const titles = [null, null, null, null, null, str(n.ejected_until), null, str(n.requests) + " in all", str(n.failures) + " in all"];
  titles.forEach((v, i) => {
    if (v !== null && row.title[i] !== v) {
      row.cells[i].title = v;
      row.title[i] = v;
    }
  });
}

function newView(name) {
  const id = "upstream-" + ++viewSeq;
  const summary = el("div", { class: "summary" });
  const tbody = el("tbody");
  const caption = el("caption", {}, "Nodes of " + name);
  const article = el("article", { class: "upstream", "aria-labelledby": id },
    el("h3", { id }, name),
    summary,
    el("table", {},
      caption,
      el("thead", {}, el("tr", {}, NODE_COLUMNS.map((h) => el("th", { scope: "col" }, h)))),
      tbody));
  article.dataset.upstream = name;
  return { article, summary, tbody, rows: new Map(), empty: null };
}

function renderNodes(view, u, dt, now) {
  const nodes = Array.isArray(u.nodes) ? u.nodes : [];
  const { tbody, rows } = view;
  if (!nodes.length) {
    rows.clear();
    if (!view.empty || tbody.firstChild !== view.empty || tbody.childNodes.length !== 1) {
      view.empty = el("tr", {}, el("td", { colspan: NODE_COLUMNS.length }, "No nodes."));
      tbody.replaceChildren(view.empty);
    }
    return;
  }
  if (view.empty) {
    view.empty.remove();
    view.empty = null;
  }
  // Node ids are unique in a registry's answer; should one repeat, its
  // rows are told apart by their rank.
  const seen = new Map();
  const order = [];
  const keys = new Set();
  for (const n of nodes) {
    const id = str(n.id);
    const k = seen.get(id) || 0;
    seen.set(id, k + 1);
    const key = k ? id + "\0" + k : id;
    keys.add(key);
    let row = rows.get(key);
    if (!row) {
      row = newRow();
      rows.set(key, row);
    }
    updateRow(row, n, nodeValues(u, n, dt, now));
    order.push(row.tr);
  }
  for (const [key, row] of rows) {
    if (!keys.has(key)) {
      row.tr.remove();
      rows.delete(key);
    }
  }
  let at = tbody.firstChild;
  for (const tr of order) {
    if (at === tr) at = at.nextSibling;
    else tbody.insertBefore(tr, at);
  }
}

function renderUpstream(view, u, dt, now) {
  let registry;
  if (!u.synced) registry = el("span", { class: "bad" }, "waiting for the first node set");
  else if (u.stale) registry = [el("strong", { class: "bad" }, "stale"), " since ", time(u.error_at), ": ", str(u.error), "; keeping the nodes of ", time(u.updated_at)];
  else registry = ["synced, version ", str(u.version), ", updated ", time(u.updated_at)];
  const nodes = Array.isArray(u.nodes) ? u.nodes : [];
  const stale = String(!!u.stale);
  if (view.article.dataset.stale !== stale) view.article.dataset.stale = stale;
  patch(view.summary, el("div", {},
    dl([
      ["Service", str(u.service)],
      ["Registry", registry],
      ["Last error", !u.stale && u.error ? [time(u.error_at), ": ", u.error] : ""],
      ["Available", str(u.available) + " of " + nodes.length + " nodes" + (u.panic ? " — panic: balancing over every node" : "")],
    ]),
    u.canary ? renderCanary(u, u.canary, dt) : "",
    u.locality ? renderLocality(u.locality) : ""));
  renderNodes(view, u, dt, now);
}

function renderUpstreams(ups, now) {
  const dt = previous.at ? (now - previous.at) / 1000 : 0;
  const box = document.getElementById("upstreams");
  const names = new Set();
  const order = [];
  for (const u of ups) {
    const name = str(u.name);
    if (names.has(name)) continue;
    names.add(name);
    let view = views.get(name);
    if (!view) {
      view = newView(name);
      views.set(name, view);
    }
    renderUpstream(view, u, dt, now);
    order.push(view.article);
  }
  for (const [name, view] of views) {
    if (!names.has(name)) {
      view.article.remove();
      views.delete(name);
    }
  }
  if (!order.length) {
    patch(box, el("div", {}, el("p", {}, "No upstreams are configured.")));
  } else {
    for (const child of [...box.children]) if (child.localName !== "article") child.remove();
    let at = box.firstChild;
    for (const a of order) {
      if (at === a) at = at.nextSibling;
      else box.insertBefore(a, at);
    }
  }
  previous = { at: now, nodes: new Map(), pools: new Map() };
  for (const u of ups) {
    for (const n of Array.isArray(u.nodes) ? u.nodes : []) {
      previous.nodes.set(u.name + "\0" + n.id, { requests: n.requests, failures: n.failures });
    }
    if (u.canary && u.canary.requests) {
      previous.pools.set(u.name, { stable: u.canary.requests.stable, canary: u.canary.requests.canary });
    }
  }
}

// clearData takes what the API said off the page: after a 401 it is not
// for whoever is at the screen now.
function clearData() {
  for (const view of views.values()) view.article.remove();
  views.clear();
  previous = { at: 0, nodes: new Map(), pools: new Map() };
  document.getElementById("upstreams").replaceChildren(el("p", {}, "Enter the admin token to see the upstreams."));
  document.getElementById("registration-body").replaceChildren(el("p", {}, "Enter the admin token to see the registration."));
  const r = document.getElementById("readiness");
  r.textContent = "unknown";
  r.dataset.state = "unknown";
  document.getElementById("updated").textContent = "";
}

// needToken stops polling and asks for the token; refused: the API
// refused the one the page had.
function needToken(refused) {
  waitingForToken = true;
  clearTimeout(timer);
  if (refused) setToken("");
  clearData();
  document.body.dataset.api = "token";
  const form = document.getElementById("token-form");
  const wasHidden = form.hidden;
  form.hidden = false;
  document.getElementById("forget-token").hidden = true;
  const msg = refused
    ? "The admin API refused the token (it may have changed on a reload): enter the admin token."
    : "This Remora needs its admin token (admin.token): enter it below.";
  setStatus(msg, true);
  document.body.dataset.api = "token";
  document.getElementById("token-error").textContent = refused ? "The admin API refused the token." : "";
  if (wasHidden) document.getElementById("token").focus();
}

async function poll() {
  if (waitingForToken) return;
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  pollAgain = false;
  clearTimeout(timer);
  try {
    const res = await api("GET", "/status");
    const b = res.body;
    if (res.status !== 200 || !b || typeof b !== "object" || !Array.isArray(b.upstreams)) {
      throw new Error("the admin API answered " + errorText(res));
    }
    const now = Date.now();
    renderReadiness(b);
    renderUpstreams(b.upstreams, now);
    renderRegistration(b.register);
    document.getElementById("token-form").hidden = true;
    document.getElementById("token-error").textContent = "";
    document.getElementById("forget-token").hidden = !token();
    setStatus("Updated " + new Date(now).toLocaleTimeString() + "; updates every second.");
  } catch (e) {
    if (e instanceof AuthError) needToken(!!token());
    else if (e instanceof TypeError) setStatus("Cannot reach the admin API (" + e.message + "); showing what it last answered, trying again every second.", true);
    else setStatus("Cannot read the admin API: " + e.message + "; trying again every second.", true);
  } finally {
    polling = false;
    if (!waitingForToken) timer = setTimeout(poll, pollAgain ? 0 : POLL_MS);
  }
}

// act calls an action, says what came of it, and polls at once.
async function act(method, path, describe) {
  try {
    const res = await api(method, path);
    if (res.status >= 300) say(method + " " + path + " failed: " + errorText(res), true);
    else say(describe(res.body), false);
  } catch (e) {
    if (e instanceof AuthError) needToken(!!token());
    else say(method + " " + path + " failed: cannot reach the admin API (" + e.message + ").", true);
  }
  poll();
}

// showRaw fetches one of the API's text answers with the token and shows
// it in the page (a plain link would be refused without the token).
async function showRaw(path) {
  const raw = document.getElementById("raw");
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  let text;
  let refused = false;
  try {
    const res = await fetch(path, { headers, cache: "no-store", credentials: "same-origin" });
    refused = res.status === 401;
    const body = await res.text();
    text = refused ? "The admin API refused the token." : res.ok ? body : "HTTP " + res.status + "\n" + body;
  } catch (e) {
    text = "Cannot read " + path + ": " + e.message;
  }
  document.getElementById("raw-title").textContent = path;
  document.getElementById("raw-body").textContent = text;
  raw.hidden = false;
  document.getElementById("raw-body").focus();
  if (refused) needToken(!!token());
}

// start asks whether the API needs a token, then polls, or asks for the
// token first, so that the page does not knock on the API without one.
async function start() {
  let required = false;
  try {
    const res = await fetch("/ui/auth", { cache: "no-store", credentials: "same-origin" });
    if (res.ok) required = !!(await res.json()).token_required;
  } catch (_) {
    // unreachable: the poll says so
  }
  if (required && !token()) needToken(false);
  else poll();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll("a[data-raw]")) {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      showRaw(a.getAttribute("href"));
    });
  }
  document.getElementById("raw-close").addEventListener("click", () => {
    document.getElementById("raw").hidden = true;
  });
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    const v = input.value.trim();
    // fetch refuses header values with other characters.
    if (!v || /[^\t\x20-\x7e\x80-\xff]/.test(v)) {
      document.getElementById("token-error").textContent = v
        ? "The token has characters an HTTP header cannot carry: check it."
        : "Enter the token.";
      input.focus();
      return;
    }
    setToken(v);
    input.value = "";
    document.getElementById("token-error").textContent = "";
    waitingForToken = false;
    setStatus("Checking the token…", false);
    poll();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    setToken("");
    needToken(false);
  });
  document.getElementById("drain").addEventListener("click", () =>
    act("POST", "/drain", () => "Draining: /readyz answers 503; Remora keeps serving."));
  document.getElementById("undrain").addEventListener("click", () =>
    act("POST", "/undrain", () => "Undrained: /readyz answers 200 again."));
  // One listener for every upstream's Resume button, which is patched
  // from poll to poll.
  document.getElementById("upstreams").addEventListener("click", (ev) => {
    const b = ev.target instanceof Element ? ev.target.closest('button[data-action="resume"]') : null;
    const article = b && b.closest("article[data-upstream]");
    if (!article) return;
    const name = article.dataset.upstream;
    act("POST", "/upstreams/" + encodeURIComponent(name) + "/canary/resume",
      (body) => body && body.was_rolled_back ? "Canary of " + name + " resumed." : "The canary of " + name + " was not rolled back.");
  });
  start();
});
