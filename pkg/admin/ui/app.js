// Remora's admin UI: polls the admin API every second and renders every
// upstream, its nodes and canary split, and the local application's
// registration. Rates are computed from the counters of successive polls.
// Everything shown comes from the API and is put into the page as text,
// never as HTML: node metadata is written by whoever registers instances.
"use strict";

const TOKEN_KEY = "remora-admin-token";
const POLL_MS = 1000;

// Counters of the previous poll, for rates: by "upstream\0node" the node's
// requests and failures, by upstream the canary pools' requests; with the
// time they were read.
let previous = { at: 0, nodes: new Map(), pools: new Map() };
let timer = 0;
let polling = false;

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// api calls the admin API with the token, if any. A 401 throws AuthError;
// other answers return {status, body} with the JSON body (or null).
async function api(method, path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const res = await fetch(path, { method, headers, cache: "no-store" });
  if (res.status === 401) throw new AuthError("the admin API wants the admin token");
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    // not JSON: leave body null
  }
  return { status: res.status, body };
}

// el builds an element: attributes (on* are listeners), then children,
// strings as text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// dl renders [term, description] pairs, skipping empty descriptions.
function dl(pairs) {
  return el("dl", {}, pairs.filter(([, d]) => d !== undefined && d !== null && d !== "")
    .map(([t, d]) => [el("dt", {}, t), el("dd", {}, d)]));
}

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return el("time", { datetime: iso, title: iso }, d.toLocaleTimeString());
}

// until renders a future time as what is left of it.
function until(iso, now) {
  if (!iso) return "";
  const left = (new Date(iso).getTime() - now) / 1000;
  return el("time", { datetime: iso, title: iso }, left > 0 ? "in " + left.toFixed(1) + " s" : "now");
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
  if (before === undefined || dt <= 0 || now < before) return null;
  return (now - before) / dt;
}

// setStatus says what is wrong in the live status line, which screen
// readers announce, or clears it; the time of the last update goes to a
// line that is not announced every second.
function setStatus(text, bad) {
  const s = document.getElementById("status");
  if (bad) {
    if (s.textContent !== text) s.textContent = text;
    s.classList.add("bad");
    return;
  }
  s.textContent = "";
  s.classList.remove("bad");
  document.getElementById("updated").textContent = text;
}

function say(text, bad) {
  const r = document.getElementById("action-result");
  r.textContent = text;
  r.classList.toggle("bad", !!bad);
}

function renderReadiness(ready) {
  const b = ready.body || {};
  const r = document.getElementById("readiness");
  const waiting = (b.waiting_for || []).length ? " (waiting for " + b.waiting_for.join(", ") + ")" : "";
  r.textContent = b.draining ? "draining" : b.ready ? "ready" : "not ready" + waiting;
  r.dataset.state = b.draining ? "draining" : b.ready ? "ready" : "not_ready";
  document.getElementById("drain").disabled = !!b.draining;
  document.getElementById("undrain").disabled = !b.draining;
}

function renderRegistration(reg) {
  const body = document.getElementById("registration-body");
  if (reg.status === 404) {
    body.replaceChildren(el("p", {}, "Nothing is registered: the configuration has no register: block."));
    return;
  }
  const r = reg.body || {};
  const side = r.registry_side;
  body.replaceChildren(dl([
    ["Registry", r.registry],
    ["Service", r.service],
    ["Instance", r.id],
    ["Address", r.address + ":" + r.port],
    ["Application health", r.app_healthy ? "healthy" : "failing" + (r.last_check_error ? ": " + r.last_check_error : "")],
    ["Registered", r.registered ? "yes, weight " + r.weight : r.withdrawn ? "no: withdrawn by the drain" : "no"],
    ["Held by the registry", el("span", { "data-up": String(!!r.up) }, r.up ? "yes" : "no")],
    ["Registry side", side ? [side.up ? "up" : "down", " since ", time(side.since),
      side.last_error ? ["; last error ", time(side.last_error_at), ": ", side.last_error] : ""] : ""],
    ["Re-registrations", String(r.reregistrations)],
  ]));
}

function renderCanary(u, c, dt) {
  const idle = c.default && !c.rolled_back && c.available === 0 && !u.nodes.some((n) => n.pool === "canary");
  if (idle) {
    return el("section", { class: "canary", "data-rolled-back": "false", "aria-label": "Canary of " + u.name },
      el("p", {}, "Canary: no canary nodes (the default rule: instances labelled canary=true, weight from canary-weight)."));
  }
  const before = previous.pools.get(u.name);
  const rs = delta(c.requests.stable, before && before.stable, dt);
  const rc = delta(c.requests.canary, before && before.canary, dt);
  let split;
  if (rs !== null && rc !== null && rs + rc > 0) {
    split = ["stable ", pct(rs / (rs + rc)), ", canary ", pct(rc / (rs + rc)), " (last poll, ", rate(rs + rc), " req/s)"];
  } else {
    const total = c.requests.stable + c.requests.canary;
    split = total > 0
      ? ["stable ", pct(c.requests.stable / total), ", canary ", pct(c.requests.canary / total), " (since start, ", String(total), " requests)"]
      : "no requests yet";
  }
  const selector = Object.entries(c.selector || {}).map(([k, v]) => k + "=" + v).join(", ");
  const rollback = c.rolled_back
    ? [el("strong", { class: "bad" }, "rolled back"), " at ", time(c.rolled_back_at), ": ", c.rollback_reason]
    : "none";
  return el("section", { class: "canary", "data-rolled-back": String(!!c.rolled_back), "aria-label": "Canary of " + u.name },
    el("h4", {}, "Canary"),
    dl([
      ["Weight", c.weight + " % (from " + c.weight_from + ")"],
      ["Rule", c.default ? "default (instances labelled canary=true)" : "canary: block"],
      ["Selector", selector],
      ["Canary nodes available", String(c.available)],
      ["Traffic split", split],
      ["Errors", "stable " + c.errors.stable + ", canary " + c.errors.canary],
      ["Automatic rollback", rollback],
    ]),
    el("button", {
      type: "button", "data-action": "resume", "data-focus": "resume:" + u.name, disabled: !c.rolled_back,
      onclick: () => act("POST", "/upstreams/" + encodeURIComponent(u.name) + "/canary/resume",
        (b) => b && b.was_rolled_back ? "Canary of " + u.name + " resumed." : "The canary of " + u.name + " was not rolled back."),
    }, "Resume canary"),
  );
}

function renderLocality(l) {
  return el("section", { class: "locality", "aria-label": "Locality" },
    el("h4", {}, "Locality"),
    dl([
      ["Zone", l.zone],
      ["Kept in the zone", pct(l.share)],
      ["Available in the zone", l.local_available + " of " + l.zone_available],
    ]));
}

function renderNodes(u, dt, now) {
  const head = ["Node", "Address", "Pool", "State", "Eject reason", "Ejected until", "In flight", "Requests/s", "Failures/s", "Latency", "Weight"];
  const rows = u.nodes.map((n) => {
    const before = previous.nodes.get(u.name + "\0" + n.id);
    const req = delta(n.requests, before && before.requests, dt);
    const fail = delta(n.failures, before && before.failures, dt);
    return el("tr", { "data-node": n.id, "data-state": n.state, class: "state-" + n.state },
      el("th", { scope: "row" }, n.id),
      el("td", {}, n.address + ":" + n.port),
      el("td", {}, n.pool),
      el("td", { class: "state" }, n.state.replaceAll("_", " ")),
      el("td", {}, n.eject_reason || ""),
      el("td", {}, until(n.ejected_until, now)),
      el("td", { class: "num" }, String(n.in_flight)),
      el("td", { class: "num", title: n.requests + " in all" }, rate(req)),
      el("td", { class: "num", title: n.failures + " in all" }, rate(fail)),
      el("td", { class: "num" }, n.latency_ms ? n.latency_ms.toFixed(1) + " ms" : "–"),
      el("td", { class: "num" }, String(n.weight)),
    );
  });
  return el("table", {},
    el("caption", {}, "Nodes of " + u.name),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: head.length }, "No nodes."))),
  );
}

function renderUpstream(u, dt, now) {
  let registry;
  if (!u.synced) registry = el("span", { class: "bad" }, "waiting for the first node set");
  else if (u.stale) registry = [el("strong", { class: "bad" }, "stale"), " since ", time(u.error_at), ": ", u.error, "; keeping the nodes of ", time(u.updated_at)];
  else registry = ["synced, version ", String(u.version), ", updated ", time(u.updated_at)];
  const id = "upstream-" + u.name;
  return el("article", { class: "upstream", "data-upstream": u.name, "data-stale": String(!!u.stale), "aria-labelledby": id },
    el("h3", { id }, u.name),
    dl([
      ["Service", u.service],
      ["Registry", registry],
      ["Last error", !u.stale && u.error ? [time(u.error_at), ": ", u.error] : ""],
      ["Available", u.available + " of " + u.nodes.length + " nodes" + (u.panic ? " — panic: balancing over every node" : "")],
    ]),
    u.canary ? renderCanary(u, u.canary, dt) : "",
    u.locality ? renderLocality(u.locality) : "",
    renderNodes(u, dt, now),
  );
}

function renderUpstreams(ups, now) {
  const dt = previous.at ? (now - previous.at) / 1000 : 0;
  const box = document.getElementById("upstreams");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focus : "";
  // An upstream whose rendering did not change keeps its elements, so
  // that focus, selection and a pointer on a button survive the poll.
  const before = new Map([...box.querySelectorAll(":scope > article")].map((a) => [a.dataset.upstream, a]));
  const fresh = ups.map((u) => {
    const a = renderUpstream(u, dt, now);
    const old = before.get(u.name);
    return old && old.isEqualNode(a) ? old : a;
  });
  if (!fresh.length) {
    box.replaceChildren(el("p", {}, "No upstreams are configured."));
  } else {
    for (const child of [...box.children]) if (!fresh.includes(child)) child.remove();
    fresh.forEach((a, i) => {
      if (box.children[i] !== a) box.insertBefore(a, box.children[i] || null);
    });
  }
  if (focused) {
    const again = box.querySelector('[data-focus="' + CSS.escape(focused) + '"]');
    if (again) again.focus();
  }
  previous = { at: now, nodes: new Map(), pools: new Map() };
  for (const u of ups) {
    for (const n of u.nodes) previous.nodes.set(u.name + "\0" + n.id, { requests: n.requests, failures: n.failures });
    if (u.canary) previous.pools.set(u.name, { stable: u.canary.requests.stable, canary: u.canary.requests.canary });
  }
}

function needToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("forget-token").hidden = true;
  setStatus(token() ? "The admin API refused the token: enter the right one." : "The admin API needs the admin token: enter it below.", true);
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [ready, ups, reg] = await Promise.all([api("GET", "/readyz"), api("GET", "/upstreams"), api("GET", "/register")]);
    renderReadiness(ready);
    const now = Date.now();
    document.getElementById("token-form").hidden = true;
    document.getElementById("forget-token").hidden = !token();
    renderUpstreams(ups.body || [], now);
    renderRegistration(reg);
    setStatus("Updated " + new Date(now).toLocaleTimeString() + "; updates every second.");
  } catch (e) {
    if (e instanceof AuthError) needToken();
    else setStatus("Cannot read the admin API: " + e.message, true);
  } finally {
    polling = false;
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }
}

// act calls an action, says what came of it, and polls at once.
async function act(method, path, describe) {
  try {
    const res = await api(method, path);
    if (res.status >= 300) say(method + " " + path + ": " + ((res.body && res.body.error) || res.status), true);
    else say(describe(res.body), false);
  } catch (e) {
    if (e instanceof AuthError) needToken();
    else say(method + " " + path + ": " + e.message, true);
  }
  poll();
}

// showRaw fetches one of the API's text answers with the token and shows
// it in the page (a plain link would be refused without the token).
async function showRaw(path) {
  const raw = document.getElementById("raw");
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  let text;
  try {
    const res = await fetch(path, { headers, cache: "no-store" });
    text = res.status === 401 ? "The admin API wants the admin token." : await res.text();
  } catch (e) {
    text = "Cannot read " + path + ": " + e.message;
  }
  document.getElementById("raw-title").textContent = path;
  document.getElementById("raw-body").textContent = text;
  raw.hidden = false;
  document.getElementById("raw-body").focus();
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
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    poll();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    poll();
  });
  document.getElementById("drain").addEventListener("click", () =>
    act("POST", "/drain", () => "Draining: /readyz answers 503; Remora keeps serving."));
  document.getElementById("undrain").addEventListener("click", () =>
    act("POST", "/undrain", () => "Undrained: /readyz answers 200 again."));
  poll();
});
