// @causality/web: the Causality SDK for web pages. A thin wrapper over the
// Go SDK compiled to WebAssembly (main.go in this directory): events flow in
// through the typed helpers or track(), are held in a bounded in-memory
// queue and flow out over one WebSocket to the collector's /v1/stream.
//
// Load wasm_exec.js (from the same Go release as causality.wasm) before
// calling init: it defines globalThis.Go.

/** Options of init. Numbers left out take the SDK's defaults (docs/sdk.md). */
export interface Options {
  /** ws:// or wss:// URL of the collector's /v1/stream, or host:port. */
  addr: string;
  /** The app's ingest key. */
  key: string;
  /** URL of causality.wasm (default "causality.wasm"). */
  wasmUrl?: string;
  flushEvents?: number;
  flushIntervalMs?: number;
  /** Memory queue bounds; the oldest events go when full (default 10000 events, 8 MiB). */
  queueEvents?: number;
  queueBytes?: number;
  sampleRate?: number;
  timeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  consent?: Consent;
  /**
   * device_id of every event. Default: an id kept in localStorage under
   * "causality.device_id" (created on first use), or a new one per page
   * load when localStorage is unavailable.
   */
  deviceId?: string;
  appVersion?: string;
  /** Report page visibility as background/foreground (default true). */
  lifecycle?: boolean;
}

export enum Consent {
  Granted = 0,
  Pending = 1,
  Denied = 2,
}

export interface Stats {
  tracked: number;
  discarded: number;
  dropped: number;
  invalid: number;
  acked: number;
  queued: number;
  held: number;
  connected: boolean;
  lastError: string;
}

/** An event as protobuf JSON of causality.event.v1.Event. */
export type Event = Record<string, unknown>;

interface GoClient {
  track(json: string): string | Error;
  identify(userId: string): Error | null;
  reset(): void;
  setConsent(state: number): Error | null;
  optOut(out: boolean): Error | null;
  background(): void;
  foreground(): void;
  flush(timeoutMs: number): Promise<void>;
  close(timeoutMs: number): Promise<void>;
  stats(): Stats;
}

type NewClient = (addr: string, key: string, config: string) => GoClient | Error;

declare const Go: new () => { importObject: WebAssembly.Imports; run(i: WebAssembly.Instance): Promise<void> };

let loading: Promise<NewClient> | undefined;

function load(url: string): Promise<NewClient> {
  if (!loading) {
    loading = (async () => {
      if (typeof Go !== "function") {
        throw new Error("causality: load wasm_exec.js before init (it defines Go)");
      }
      const go = new Go();
      const resp = await fetch(url);
      if (!resp.ok) {
        throw new Error(`causality: fetch ${url}: HTTP ${resp.status}`);
      }
      const { instance } = await WebAssembly.instantiate(await resp.arrayBuffer(), go.importObject);
      void go.run(instance); // runs until main blocks, which registers the function
      const g = globalThis as unknown as { __causalityNewClient?: NewClient };
      const f = g.__causalityNewClient;
      if (typeof f !== "function") {
        throw new Error("causality: the wasm module did not start");
      }
      return f;
    })();
    loading.catch(() => (loading = undefined));
  }
  return loading;
}

function check<T>(v: T | Error): T {
  if (v instanceof Error) throw v;
  return v;
}

function storedDeviceId(): string | undefined {
  try {
    const k = "causality.device_id";
    let id = globalThis.localStorage?.getItem(k);
    if (!id) {
      id = globalThis.crypto.randomUUID();
      globalThis.localStorage?.setItem(k, id);
    }
    return id;
  } catch {
    return undefined; // storage disabled: the SDK's per-load install id
  }
}

/** Loads the wasm module (once) and returns a client. */
export async function init(opts: Options): Promise<Client> {
  const newClient = await load(opts.wasmUrl ?? "causality.wasm");
  const nav = globalThis.navigator;
  const scr = globalThis.screen;
  const config = {
    flushEvents: opts.flushEvents,
    flushIntervalMs: opts.flushIntervalMs,
    queueEvents: opts.queueEvents,
    queueBytes: opts.queueBytes,
    sampleRate: opts.sampleRate ?? 1,
    timeoutMs: opts.timeoutMs,
    minBackoffMs: opts.minBackoffMs,
    maxBackoffMs: opts.maxBackoffMs,
    consent: opts.consent,
    deviceId: opts.deviceId ?? storedDeviceId(),
    platform: "web",
    appVersion: opts.appVersion,
    deviceModel: nav?.userAgent?.slice(0, 128),
    screenWidth: scr?.width,
    screenHeight: scr?.height,
    locale: nav?.language,
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
  };
  const c = new Client(check(newClient(opts.addr, opts.key, JSON.stringify(config))));
  if (opts.lifecycle ?? true) c.watchLifecycle();
  return c;
}

/** A client. Tracking never blocks; flush and close return Promises. */
export class Client {
  private unwatch?: () => void;

  constructor(private readonly c: GoClient) {}

  /** Records an event (protobuf JSON of causality.event.v1.Event) and returns its id ("" if discarded). */
  track(event: Event | string): string {
    return check(this.c.track(typeof event === "string" ? event : JSON.stringify(event)));
  }

  screenView(screenName: string, previousScreen = ""): string {
    return this.track({ screenView: { screenName, previousScreen } });
  }

  buttonTap(buttonId: string, buttonText = "", screenName = ""): string {
    return this.track({ buttonTap: { buttonId, buttonText, screenName } });
  }

  productView(productId: string, productName: string, priceCents: number, currency: string): string {
    return this.track({ productView: { productId, productName, priceCents, currency } });
  }

  addToCart(cartId: string, productId: string, quantity: number, priceCents: number, currency: string): string {
    return this.track({ addToCart: { cartId, productId, quantity, priceCents, currency } });
  }

  purchase(orderId: string, totalCents: number, currency: string): string {
    return this.track({ purchaseComplete: { orderId, totalCents, currency } });
  }

  /** An app-defined event; parameters keep their type (integer, float, boolean, string). */
  custom(eventName: string, params: Record<string, string | number | boolean> = {}): string {
    const e: Record<string, Record<string, unknown>> = { stringParams: {}, intParams: {}, floatParams: {}, boolParams: {} };
    for (const [k, v] of Object.entries(params)) {
      if (typeof v === "boolean") e.boolParams[k] = v;
      else if (typeof v === "number") (Number.isInteger(v) ? e.intParams : e.floatParams)[k] = v;
      else e.stringParams[k] = String(v);
    }
    return this.track({ customEvent: { eventName, ...e } });
  }

  /** Records a sign-in and identifies the user. */
  login(userId: string, method = ""): string {
    this.identify(userId);
    return this.track({ userLogin: { userId, method } });
  }

  identify(userId: string): void {
    check(this.c.identify(userId));
  }

  /** Forgets the user and starts a new session. */
  reset(): void {
    this.c.reset();
  }

  setConsent(state: Consent): void {
    check(this.c.setConsent(state));
  }

  optOut(out: boolean): void {
    check(this.c.optOut(out));
  }

  /** Resolves once every event tracked before is acknowledged by the collector. */
  flush(timeoutMs = 10_000): Promise<void> {
    return this.c.flush(timeoutMs);
  }

  /** Flushes and stops the client; unsent events are lost (the queue is in memory). */
  close(timeoutMs = 10_000): Promise<void> {
    this.unwatch?.();
    return this.c.close(timeoutMs);
  }

  stats(): Stats {
    return this.c.stats();
  }

  /** Hidden page = background (sends at once); visible again = foreground. */
  watchLifecycle(): void {
    const doc = globalThis.document;
    if (!doc || this.unwatch) return;
    const onChange = () => (doc.visibilityState === "hidden" ? this.c.background() : this.c.foreground());
    doc.addEventListener("visibilitychange", onChange);
    this.unwatch = () => doc.removeEventListener("visibilitychange", onChange);
  }
}
