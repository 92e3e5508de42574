// Calls to the collector: the console's own API under /console/api/ and
// the AdminService's HTTP JSON endpoints, all with the admin token.

const KEY = "causality.adminToken";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

// ApiError carries the {"code", "message"} body of a failed call.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || "HTTP " + status);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function check(res) {
  if (res.ok) return res;
  let body = {};
  try { body = await res.json(); } catch { /* not JSON */ }
  const err = new ApiError(res.status, body.code, body.message);
  if (res.status === 401) onUnauthorized(err);
  throw err;
}

function headers(extra) {
  return { Authorization: "Bearer " + token.get(), ...extra };
}

// get fetches a console API path and returns its JSON.
export async function get(path, params) {
  const q = params ? "?" + new URLSearchParams(clean(params)) : "";
  const res = await check(await fetch(path + q, { headers: headers() }));
  return res.json();
}

// admin calls an AdminService method over HTTP JSON.
export async function admin(method, body) {
  const res = await check(await fetch("/causality.admin.v1.AdminService/" + method, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body || {}),
  }));
  return res.json();
}

function clean(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) out[k] = String(v);
  return out;
}

// stream reads a server-sent-events endpoint with fetch (EventSource
// cannot send the Authorization header) and calls on[event](data) per
// event. It reconnects after errors until the returned stop is called.
export function stream(path, params, on) {
  const ctl = new AbortController();
  const url = path + "?" + new URLSearchParams(clean(params));
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const res = await check(await fetch(url, { headers: headers(), signal: ctl.signal }));
        on.open?.();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            dispatch(buf.slice(0, i), on);
            buf = buf.slice(i + 2);
          }
        }
        if (!stopped) on.closed?.("the server closed the stream");
      } catch (e) {
        if (stopped) return;
        on.closed?.(e.message);
        if (e instanceof ApiError && (e.status === 401 || e.status === 400)) return;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => { stopped = true; ctl.abort(); };
}

function dispatch(block, on) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length || !on[event]) return;
  try { on[event](JSON.parse(data.join("\n"))); } catch (e) { console.error("stream event", event, e); }
}

// field reads a protobuf JSON field by its proto name whether the JSON
// uses proto names ("app_id") or lowerCamelCase ("appId").
export function field(obj, name) {
  if (!obj) return undefined;
  if (name in obj) return obj[name];
  const camel = name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
  return obj[camel];
}
