// The console's pages: sign-in, live tail, anomalies, baselines, rules.
import { token, get, admin, stream, field, setUnauthorizedHandler } from "./api.js";
import { hbars, vbars, gauge } from "./charts.js";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 200; // rows kept in each live list
const info = { event_types: [], anomaly_kinds: [] };
const stops = {}; // stream name -> stop function

// h builds an element: h("td", {class: "x"}, "text", child, ...).
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) e.append(c);
  return e;
}

const time = (ms) => (ms ? new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
const clock = (ms) => (ms ? new Date(Number(ms)).toISOString().slice(11, 23) : "");
const kindLabel = (k) => String(k || "").replace(/^ANOMALY_KIND_/, "").toLowerCase().replaceAll("_", " ");
const platformLabel = (p) => String(p || "").replace(/^PLATFORM_/, "").toLowerCase();
const num = (v, d = 3) => (v === undefined || v === null ? "" : Number(v).toFixed(d).replace(/\.?0+$/, "") || "0");

// prepend adds row at the top of list and keeps at most MAX_ROWS.
function prepend(list, row, empty) {
  list.prepend(row);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
  if (empty) empty.hidden = true;
}

function rememberApp(app) {
  if (!app) return;
  const dl = $("known-apps");
  if (![...dl.options].some((o) => o.value === app)) dl.append(h("option", { value: app }));
}

// ---- session ----

function showView(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  if (name !== "login") location.hash = name;
  if (name === "rules") loadRules();
}

async function signIn(t, quiet) {
  token.set(t);
  try {
    Object.assign(info, await get("/console/api/info"));
  } catch (e) {
    token.clear();
    if (!quiet) $("login-error").textContent = e.status === 401 ? "The token was refused." : "Sign-in failed: " + e.message;
    return false;
  }
  $("login-error").textContent = "";
  $("tabs").hidden = false;
  $("session").hidden = false;
  $("session-info").textContent = `events: ${info.events_topic}` + (info.detector ? "" : " · no detector");
  fillPickers();
  startTail();
  startAnomalies();
  startFirings();
  loadApps();
  const tab = location.hash.slice(1);
  showView(["tail", "anomalies", "baselines", "rules"].includes(tab) ? tab : "tail");
  return true;
}

function signOut(message) {
  token.clear();
  for (const stop of Object.values(stops)) stop();
  $("tabs").hidden = true;
  $("session").hidden = true;
  $("login-error").textContent = message || "";
  $("login-token").value = "";
  showView("login");
}

function fillPickers() {
  const types = $("known-types");
  types.replaceChildren(...info.event_types.map((t) => h("option", { value: t })));
  const kinds = info.anomaly_kinds.map((k) => h("option", { value: k }, kindLabel(k)));
  $("anom-kind").replaceChildren(h("option", { value: "" }, "all kinds"), ...kinds.map((o) => o.cloneNode(true)));
  $("rule-kinds").replaceChildren(...kinds);
}

async function loadApps() {
  try {
    const res = await admin("ListApps", {});
    for (const a of res.apps || []) rememberApp(a.id);
  } catch { /* apps are a convenience here */ }
}

// ---- live tail ----

function eventDetail(type, ev) {
  const p = ev[type];
  if (!p || typeof p !== "object") return "";
  return Object.entries(p).filter(([, v]) => typeof v !== "object").slice(0, 3).map(([k, v]) => `${k}=${v}`).join(" ");
}

function startTail() {
  stops.tail?.();
  const status = $("tail-status");
  let paused = false;
  $("tail-pause").onclick = () => {
    paused = !paused;
    $("tail-pause").textContent = paused ? "Resume" : "Pause";
  };
  stops.tail = stream("/console/api/events", {
    app_id: $("tail-app").value.trim(), type: $("tail-types").value.trim(), backfill: $("tail-backfill").value,
  }, {
    ready: (r) => { status.textContent = `live · ${r.partitions} partitions`; status.className = "status live"; },
    waiting: (w) => { status.textContent = `waiting for ${w.topic}`; status.className = "status"; },
    error: (e) => { status.textContent = "error: " + e.message; status.className = "status bad"; },
    closed: (why) => { status.textContent = "reconnecting (" + why + ")"; status.className = "status bad"; },
    stats: (s) => { status.textContent = `live · ${s.sent} shown, ${s.dropped} sampled out, ${s.filtered} filtered`; },
    item: (it) => {
      if (paused) return;
      const ev = it.data;
      rememberApp(it.app_id);
      const json = h("pre", {}, JSON.stringify(ev, null, 2));
      const detailRow = h("tr", { class: "detail", hidden: true }, h("td", { colspan: 5 }, json,
        h("button", { class: "secondary", type: "button", onclick: () => { $("test-event").value = JSON.stringify(ev, null, 2); showView("rules"); } }, "Test a rule with this event")));
      const row = h("tr", { class: "event", dataset: { id: ev.event_id || "" }, onclick: () => { detailRow.hidden = !detailRow.hidden; } },
        h("td", { class: "mono" }, clock(ev.timestamp_ms || it.time_ms)),
        h("td", {}, it.app_id), h("td", {}, h("span", { class: "tag" }, it.type || "?")),
        h("td", { class: "mono" }, ev.device_id || ""), h("td", { class: "mono dim" }, eventDetail(it.type, ev)));
      const list = $("tail-rows");
      list.prepend(detailRow);
      prepend(list, row, $("tail-empty"));
    },
  });
}

// ---- anomalies ----

function anomalyCard(a) {
  const c = a.cohort || {};
  const b = a.baseline || {};
  const evidence = (a.evidence || []).map((e) => h("tr", {},
    h("td", { class: "mono" }, e.key), h("td", {}, num(e.observed)), h("td", {}, num(e.expected ?? 0)),
    h("td", {}, h("span", { class: "meter" }, h("span", { class: "fill", dataset: { w: e.contribution || 0 } })), " ", num((e.contribution || 0) * 100, 1) + "%")));
  const card = h("article", { class: "card anomaly", dataset: { id: a.id, kind: a.kind } },
    h("header", {},
      h("span", { class: "tag kind" }, kindLabel(a.kind)),
      h("strong", {}, a.summary || ""),
      h("span", { class: "dim right" }, "detected " + time(a.detected_at_ms))),
    h("div", { class: "grid" },
      h("div", {}, h("label", {}, "Score vs threshold"), gauge(Number(a.score || 0), Number(a.threshold || 0)),
        h("div", { class: "mono" }, `${num(a.score)} ≥ ${num(a.threshold)}`)),
      h("div", {}, h("label", {}, "Cohort"), h("div", {}, `${a.app_id} ${c.app_version || "?"} (${c.build_number || "?"}) ${platformLabel(c.platform)}`)),
      h("div", {}, h("label", {}, "Device"), h("div", { class: "mono" }, a.device_id || "(cohort-wide)")),
      h("div", {}, h("label", {}, "Window"), h("div", { class: "mono" }, `${time(a.window_start_ms)} → ${clock(a.window_end_ms)}`)),
      h("div", {}, h("label", {}, "Baseline"), h("div", {}, `${b.source || "none"}, ${b.windows || 0} windows: expected ${num(b.expected ?? 0)} ± ${num(b.spread ?? 0)}, observed ${num(b.observed ?? 0)}`)),
      h("div", {}, h("label", {}, "Alert rule"), h("div", {}, a.rule || ""))),
    evidence.length ? h("table", { class: "list evidence" },
      h("thead", {}, h("tr", {}, h("th", {}, "Evidence"), h("th", {}, "Observed"), h("th", {}, "Expected"), h("th", {}, "Contribution"))),
      h("tbody", {}, evidence)) : h("p", { class: "dim" }, "No evidence items."),
    (a.devices || []).length ? h("p", { class: "dim" }, "Devices: ", h("span", { class: "mono" }, a.devices.slice(0, 20).join(", ") + (a.devices.length > 20 ? " …" : ""))) : null);
  for (const f of card.querySelectorAll(".fill")) f.style.width = Math.min(100, Number(f.dataset.w) * 100) + "%";
  return card;
}

function startAnomalies() {
  stops.anomalies?.();
  const status = $("anom-status");
  const seen = new Set();
  $("anom-list").replaceChildren();
  $("anom-empty").hidden = false;
  stops.anomalies = stream("/console/api/anomalies", {
    app_id: $("anom-app").value.trim(), type: $("anom-kind").value, backfill: $("anom-backfill").value,
  }, {
    ready: () => { status.textContent = "live"; status.className = "status live"; },
    waiting: (w) => { status.textContent = `waiting for ${w.topic} (no detector has written yet)`; status.className = "status"; },
    error: (e) => { status.textContent = "error: " + e.message; status.className = "status bad"; },
    closed: (why) => { status.textContent = "reconnecting (" + why + ")"; status.className = "status bad"; },
    item: (it) => {
      const a = it.data;
      if (seen.has(a.id)) return; // the detector may write an anomaly again after a restart
      seen.add(a.id);
      rememberApp(a.app_id);
      prepend($("anom-list"), anomalyCard(a), $("anom-empty"));
    },
  });
}

// ---- baselines ----

async function findCohorts() {
  const app = $("base-app").value.trim();
  const status = $("base-status");
  status.textContent = "reading the last window of events…";
  $("base-detail").replaceChildren();
  try {
    const res = await get("/console/api/cohorts", { app_id: app, window_ms: $("base-window").value });
    status.textContent = `${res.scanned} events read${res.truncated ? " (truncated)" : ""}: ${res.cohorts.length} cohort${res.cohorts.length === 1 ? "" : "s"} of ${app} in the last ${$("base-window").selectedOptions[0].textContent}`;
    $("base-cohorts").replaceChildren(...res.cohorts.map((c) =>
      h("button", { type: "button", class: "chip", onclick: (e) => showBaseline(c, e.currentTarget) },
        `${c.app_version || "?"} (${c.build_number || "?"}) ${platformLabel(c.platform)} · ${c.events} events`)));
    if (!res.cohorts.length) $("base-detail").replaceChildren(h("p", { class: "empty" }, "No events of this app in the window. Pick a longer window or send some events."));
    else $("base-cohorts").firstElementChild.click();
  } catch (e) {
    status.textContent = "error: " + e.message;
  }
}

async function showBaseline(cur, button) {
  for (const b of $("base-cohorts").children) b.classList.toggle("active", b === button);
  const detail = $("base-detail");
  const params = { app_id: cur.app_id, app_version: cur.app_version, build_number: cur.build_number, platform: cur.platform };
  let base = null, note = "";
  if (!info.detector) note = "No detector configured (-console.detector-addr): only the current window is shown.";
  else {
    try {
      base = (await get("/console/api/baseline", params)).baseline;
    } catch (e) {
      note = e.status === 404 ? "The detector has not learned a baseline for this cohort yet." : "Baseline: " + e.message;
    }
  }
  // The current window's shares next to the baseline's.
  const curMix = {};
  for (const [t, n] of Object.entries(cur.event_mix)) curMix[t] = n / Math.max(1, cur.events);
  const baseMix = (base && base.event_mix) || {};
  const types = [...new Set([...Object.keys(baseMix), ...Object.keys(curMix)])]
    .sort((a, b) => Math.max(baseMix[b] || 0, curMix[b] || 0) - Math.max(baseMix[a] || 0, curMix[a] || 0)).slice(0, 20);
  const perDevice = cur.events / Math.max(1, cur.devices);
  const parts = [h("h2", {}, `${cur.app_id} ${cur.app_version} (${cur.build_number}) ${platformLabel(cur.platform)}`)];
  if (note) parts.push(h("p", { class: "note" }, note));
  parts.push(h("div", { class: "card" }, h("h3", {}, "Event-type mix: baseline vs current window"),
    hbars(types, [
      ...(base ? [{ name: "baseline", cls: "base", values: baseMix }] : []),
      { name: "current window", cls: "cur", values: curMix },
    ], { percent: true, title: "event-type mix", width: 760 })));
  if (base) {
    const hours = base.events_per_device_by_hour || [];
    parts.push(h("div", { class: "card" }, h("h3", {}, "Events per active device"),
      hbars(["per device"], [
        { name: "baseline", cls: "base", values: { "per device": Number(base.events_per_device || 0) } },
        { name: "current window", cls: "cur", values: { "per device": perDevice } },
      ], { title: "events per device", width: 760 }),
      hours.length ? h("div", {}, h("h3", {}, "Baseline events per device by UTC hour (line: current window)"),
        vbars(hours.map((_, i) => String(i)), hours.map(Number), { mark: perDevice, markLabel: "now " + num(perDevice, 1), highlight: new Date().getUTCHours(), width: 760 })) : null));
    parts.push(h("div", { class: "card" }, h("h3", {}, "Baseline"), h("table", { class: "kv" }, h("tbody", {},
      ...[
        ["source", base.source], ["window", (Number(base.window_ms) / 1000) + " s"],
        ["windows learned (own)", `${base.windows || 0} (${base.own_windows || 0})`],
        ["events per device", `${num(base.events_per_device)} ± ${num(base.events_per_device_sd)}`],
        ["median gap", `${num(base.median_gap_ms, 0)} ms ± ${num(base.median_gap_sigma_ms, 0)}`],
        ["transition NLL", `${num(base.transition_nll)} ± ${num(base.transition_nll_sigma)}`],
        ["emulator / jailbroken share", `${num((base.emulator_share || 0) * 100, 2)}% / ${num((base.jailbroken_share || 0) * 100, 2)}%`],
        ["active devices (last window)", base.active_devices || 0],
        ["last window learned", time(base.last_window_end_ms)],
        ["current window", `${cur.events} events from ${cur.devices} devices`],
      ].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, String(v ?? ""))))))));
    const tr = base.transitions || [];
    if (tr.length) parts.push(h("div", { class: "card" }, h("h3", {}, "Most frequent transitions"),
      hbars(tr.slice(0, 12).map((t) => t.key), [{ name: "P(next | origin)", cls: "base", values: Object.fromEntries(tr.map((t) => [t.key, Number(t.probability)])) }],
        { percent: true, labelWidth: 300, width: 760 })));
  }
  detail.replaceChildren(...parts);
}

// ---- rules ----

const OPS = ["OPERATOR_EQ", "OPERATOR_NE", "OPERATOR_LT", "OPERATOR_LE", "OPERATOR_GT", "OPERATOR_GE", "OPERATOR_IN", "OPERATOR_CONTAINS", "OPERATOR_REGEX", "OPERATOR_EXISTS"];
const opLabel = { OPERATOR_EQ: "=", OPERATOR_NE: "≠", OPERATOR_LT: "<", OPERATOR_LE: "≤", OPERATOR_GT: ">", OPERATOR_GE: "≥", OPERATOR_IN: "in", OPERATOR_CONTAINS: "contains", OPERATOR_REGEX: "matches", OPERATOR_EXISTS: "exists" };
let editing = null; // the rule being edited, or null for a new one
let jsonMode = false;

function addPredicate(p = {}) {
  const op = h("select", { class: "pred-op" }, ...OPS.map((o) => h("option", { value: o }, opLabel[o])));
  op.value = field(p, "op") || "OPERATOR_EQ";
  const values = field(p, "values") || [];
  const row = h("div", { class: "pred" },
    h("input", { class: "pred-path", placeholder: "path, e.g. purchase_complete.total_cents", value: field(p, "path") || "" }),
    op,
    h("input", { class: "pred-value", placeholder: "value (in: a,b,c)", value: values.length ? values.join(",") : field(p, "value") || "" }),
    h("button", { type: "button", class: "link", onclick: () => row.remove() }, "remove"));
  $("rule-preds").append(row);
}

const seconds = (d) => (d ? parseFloat(String(d)) : 0); // protobuf JSON duration "60s"
const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

// formRule builds a Rule (protobuf JSON, proto names) from the form.
function formRule() {
  const r = { name: $("rule-name").value.trim(), app_id: $("rule-app").value.trim(), disabled: editing ? !!field(editing, "disabled") : false };
  if (editing) r.id = editing.id;
  if (document.querySelector("input[name=rule-on]:checked").value === "event") {
    r.event = { event_types: list($("rule-types").value), predicates: [] };
    for (const row of $("rule-preds").children) {
      const path = row.querySelector(".pred-path").value.trim();
      if (!path) continue;
      const op = row.querySelector(".pred-op").value;
      const v = row.querySelector(".pred-value").value;
      const p = { path, op };
      if (op === "OPERATOR_IN") p.values = list(v);
      else if (op !== "OPERATOR_EXISTS") p.value = v.trim();
      r.event.predicates.push(p);
    }
  } else {
    r.anomaly = { kinds: [...$("rule-kinds").selectedOptions].map((o) => o.value), min_score: Number($("rule-min-score").value || 0) };
  }
  const count = Number($("rule-rate-count").value || 0);
  if (count > 0) r.rate = { count, window: Number($("rule-rate-window").value || 0) + "s", per: $("rule-rate-per").value };
  const cd = Number($("rule-cooldown").value || 0);
  if (cd > 0) r.cooldown = cd + "s";
  r.actions = [];
  if ($("rule-topic").value.trim()) r.actions.push({ kafka_topic: $("rule-topic").value.trim() });
  if ($("rule-webhook").value) r.actions.push({ webhook_id: $("rule-webhook").value });
  return r;
}

// fillForm shows a rule in the form.
function fillForm(r) {
  $("rule-name").value = field(r, "name") || "";
  $("rule-app").value = field(r, "app_id") || "";
  const an = field(r, "anomaly");
  document.querySelector(`input[name=rule-on][value=${an ? "anomaly" : "event"}]`).checked = true;
  toggleCondition();
  const ev = field(r, "event") || {};
  $("rule-types").value = (field(ev, "event_types") || []).join(",");
  $("rule-preds").replaceChildren();
  for (const p of field(ev, "predicates") || []) addPredicate(p);
  const kinds = new Set(field(an || {}, "kinds") || []);
  for (const o of $("rule-kinds").options) o.selected = kinds.has(o.value);
  $("rule-min-score").value = field(an || {}, "min_score") || 0;
  const rate = field(r, "rate");
  $("rule-rate-count").value = rate ? field(rate, "count") || 0 : 0;
  $("rule-rate-window").value = rate ? seconds(field(rate, "window")) : 60;
  $("rule-rate-per").value = (rate && field(rate, "per")) || "RATE_SCOPE_DEVICE";
  $("rule-cooldown").value = seconds(field(r, "cooldown"));
  const actions = field(r, "actions") || [];
  $("rule-topic").value = actions.map((a) => field(a, "kafka_topic")).find(Boolean) || "";
  $("rule-webhook").value = actions.map((a) => field(a, "webhook_id")).find(Boolean) || "";
}

function toggleCondition() {
  const ev = document.querySelector("input[name=rule-on]:checked").value === "event";
  $("rule-event").hidden = !ev;
  $("rule-anomaly").hidden = ev;
}

function setJSONMode(on) {
  if (on === jsonMode) return;
  if (on) $("rule-json").value = JSON.stringify(formRule(), null, 2);
  else {
    try { fillForm(JSON.parse($("rule-json").value)); } catch (e) { $("rule-error").textContent = "JSON: " + e.message; return; }
  }
  jsonMode = on;
  $("rule-fields").hidden = on;
  $("rule-json-box").hidden = !on;
  $("rule-mode-form").classList.toggle("active", !on);
  $("rule-mode-json").classList.toggle("active", on);
}

// currentRule is the rule of the form or of the JSON editor.
function currentRule() {
  if (!jsonMode) return formRule();
  const r = JSON.parse($("rule-json").value);
  if (editing && !r.id) r.id = editing.id;
  return r;
}

function resetForm() {
  editing = null;
  fillForm({});
  $("rule-form-title").textContent = "New rule";
  $("rule-save").textContent = "Create rule";
  $("rule-cancel").hidden = true;
  if (jsonMode) $("rule-json").value = JSON.stringify(formRule(), null, 2);
}

function ruleSummary(r) {
  const ev = field(r, "event"), an = field(r, "anomaly");
  let s = "";
  if (an) {
    const kinds = field(an, "kinds") || [];
    s = "anomaly " + (kinds.length ? kinds.map(kindLabel).join(", ") : "any kind");
    if (field(an, "min_score")) s += ` score ≥ ${field(an, "min_score")}`;
  } else {
    const types = field(ev || {}, "event_types") || [];
    s = (types.length ? types.join(", ") : "any event");
    for (const p of field(ev || {}, "predicates") || []) {
      const op = field(p, "op");
      s += ` · ${field(p, "path")} ${opLabel[op] || op}` + (op === "OPERATOR_EXISTS" ? "" : " " + ((field(p, "values") || []).length ? field(p, "values").join(",") : field(p, "value") || ""));
    }
  }
  const rate = field(r, "rate");
  if (rate && field(rate, "count")) s += ` · ≥${field(rate, "count")} in ${field(rate, "window")} per ${String(field(rate, "per")).replace("RATE_SCOPE_", "").toLowerCase()}`;
  if (field(r, "cooldown")) s += ` · cooldown ${field(r, "cooldown")}`;
  return s;
}

function actionSummary(r) {
  return (field(r, "actions") || []).map((a) => field(a, "kafka_topic") ? "kafka " + field(a, "kafka_topic") : "webhook " + field(a, "webhook_id")).join(", ") || "firings topic only";
}

async function loadRules() {
  $("rules-error").textContent = "";
  try {
    const [rules, hooks] = await Promise.all([admin("ListRules", {}), admin("ListWebhooks", {}).catch(() => ({ webhooks: [] }))]);
    const sel = $("rule-webhook"), keep = sel.value;
    sel.replaceChildren(h("option", { value: "" }, "none"), ...(hooks.webhooks || []).map((w) => h("option", { value: w.id }, `${w.id} ${w.url}`)));
    sel.value = keep;
    const rows = (rules.rules || []).map((r) => {
      const enabled = h("input", { type: "checkbox", class: "rule-enabled", checked: !field(r, "disabled"), title: "enabled",
        onchange: async (e) => {
          try {
            await admin("UpdateRule", { rule: { ...r, disabled: !e.target.checked } });
          } catch (err) { $("rules-error").textContent = err.message; }
          loadRules();
        } });
      return h("tr", { dataset: { id: r.id, name: field(r, "name") } },
        h("td", {}, h("button", { type: "button", class: "link", title: "edit and test", onclick: () => editRule(r) }, field(r, "name"))),
        h("td", {}, field(r, "app_id") || "all"), h("td", { class: "dim" }, ruleSummary(r)), h("td", { class: "dim" }, actionSummary(r)),
        h("td", {}, enabled),
        h("td", {}, h("button", { type: "button", class: "link danger", onclick: async () => {
          if (!confirm(`Delete rule ${field(r, "name")}?`)) return;
          try { await admin("DeleteRule", { id: r.id }); } catch (err) { $("rules-error").textContent = err.message; }
          if (editing && editing.id === r.id) resetForm();
          loadRules();
        } }, "delete")));
    });
    $("rules-rows").replaceChildren(...rows);
    $("rules-empty").hidden = rows.length > 0;
  } catch (e) {
    $("rules-error").textContent = "Rules: " + e.message;
  }
}

function editRule(r) {
  editing = r;
  fillForm(r);
  if (jsonMode) $("rule-json").value = JSON.stringify(r, null, 2);
  $("rule-form-title").textContent = "Edit " + field(r, "name");
  $("rule-save").textContent = "Save rule";
  $("rule-cancel").hidden = false;
}

async function saveRule(e) {
  e.preventDefault();
  $("rule-error").textContent = "";
  $("rule-ok").textContent = "";
  let rule;
  try { rule = currentRule(); } catch (err) { $("rule-error").textContent = "JSON: " + err.message; return; }
  try {
    const res = await admin(editing ? "UpdateRule" : "CreateRule", { rule });
    $("rule-ok").textContent = (editing ? "Saved " : "Created ") + field(res.rule, "name") + " (" + res.rule.id + ").";
    resetForm();
    loadRules();
  } catch (err) {
    $("rule-error").textContent = err.message;
  }
}

async function testRule(e) {
  e.preventDefault();
  const out = $("test-result");
  let rule, event;
  try { rule = currentRule(); event = JSON.parse($("test-event").value); } catch (err) { out.replaceChildren(h("p", { class: "error" }, "JSON: " + err.message)); return; }
  try {
    const res = await admin("TestRule", { rule, event });
    out.replaceChildren(h("p", { class: res.matched ? "ok" : "error", id: "test-verdict" }, res.matched ? "Matched." : "Did not match."),
      h("ul", { class: "mono" }, ...(res.explanation || []).map((l) => h("li", {}, l))));
  } catch (err) {
    out.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

function startFirings() {
  stops.firings?.();
  const status = $("fire-status");
  stops.firings = stream("/console/api/firings", { backfill: 20 }, {
    ready: () => { status.textContent = "live"; status.className = "status live"; },
    waiting: () => { status.textContent = "waiting for the firings topic (no rule has fired yet)"; status.className = "status"; },
    error: (e) => { status.textContent = "error: " + e.message; status.className = "status bad"; },
    closed: (why) => { status.textContent = "reconnecting (" + why + ")"; status.className = "status bad"; },
    item: (it) => {
      const f = it.data;
      const subject = f.event ? "event " + (Object.keys(f.event).find((k) => info.event_types.includes(k)) || "") + " " + (f.event.event_id || "")
        : f.anomaly ? "anomaly " + kindLabel(f.anomaly.kind) : "";
      prepend($("fire-rows"), h("tr", { class: "firing", dataset: { rule: f.rule_id } },
        h("td", { class: "mono" }, clock(f.time_ms || it.time_ms)), h("td", {}, f.rule_name || f.rule_id),
        h("td", {}, f.app_id || ""), h("td", { class: "mono" }, f.device_id || ""), h("td", {}, String(f.matches || 1)),
        h("td", { class: "mono dim" }, subject)), $("fire-empty"));
    },
  });
}

// ---- wiring ----

const sampleEvent = () => ({
  event_id: "sample-1", app_id: $("rule-app").value.trim() || "my-app", device_id: "device-001", install_id: "install-001",
  timestamp_ms: Date.now(), device_context: { platform: "PLATFORM_ANDROID", app_version: "2.4.1", build_number: "2410" },
  properties: { campaign: "spring" },
  purchase_complete: { order_id: "o-1", item_count: 2, total_cents: 12999, currency: "EUR" },
});

function init() {
  setUnauthorizedHandler(() => signOut("The admin token was refused; sign in again."));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-submit").disabled = true;
    await signIn($("login-token").value.trim());
    $("login-submit").disabled = false;
  });
  $("logout").onclick = () => signOut();
  for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => showView(b.dataset.tab);
  $("tail-form").addEventListener("submit", (e) => { e.preventDefault(); $("tail-rows").replaceChildren(); $("tail-empty").hidden = false; startTail(); });
  $("anom-form").addEventListener("submit", (e) => { e.preventDefault(); startAnomalies(); });
  $("base-form").addEventListener("submit", (e) => { e.preventDefault(); findCohorts(); });
  $("rules-refresh").onclick = () => loadRules();
  $("rule-add-pred").onclick = () => addPredicate();
  for (const r of document.querySelectorAll("input[name=rule-on]")) r.onchange = toggleCondition;
  $("rule-mode-form").onclick = () => setJSONMode(false);
  $("rule-mode-json").onclick = () => setJSONMode(true);
  $("rule-cancel").onclick = resetForm;
  $("rule-form").addEventListener("submit", saveRule);
  $("test-form").addEventListener("submit", testRule);
  $("test-event").value = JSON.stringify(sampleEvent(), null, 2);
  const t = token.get();
  if (t) signIn(t, true).then((ok) => { if (!ok) showView("login"); });
  else showView("login");
}

init();
