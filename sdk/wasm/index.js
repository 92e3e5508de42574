// @causality/web: the Causality SDK for web pages. A thin wrapper over the
// Go SDK compiled to WebAssembly (main.go in this directory): events flow in
// through the typed helpers or track(), are held in a bounded in-memory
// queue and flow out over one WebSocket to the collector's /v1/stream.
//
// Load wasm_exec.js (from the same Go release as causality.wasm) before
// calling init: it defines globalThis.Go.
export var Consent;
(function (Consent) {
    Consent[Consent["Granted"] = 0] = "Granted";
    Consent[Consent["Pending"] = 1] = "Pending";
    Consent[Consent["Denied"] = 2] = "Denied";
})(Consent || (Consent = {}));
let loading;
function load(url) {
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
            const g = globalThis;
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
function check(v) {
    if (v instanceof Error)
        throw v;
    return v;
}
function storedDeviceId() {
    try {
        const k = "causality.device_id";
        let id = globalThis.localStorage?.getItem(k);
        if (!id) {
            id = globalThis.crypto.randomUUID();
            globalThis.localStorage?.setItem(k, id);
        }
        return id;
    }
    catch {
        return undefined; // storage disabled: the SDK's per-load install id
    }
}
/** Loads the wasm module (once) and returns a client. */
export async function init(opts) {
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
    if (opts.lifecycle ?? true)
        c.watchLifecycle();
    return c;
}
/** A client. Tracking never blocks; flush and close return Promises. */
export class Client {
    constructor(c) {
        this.c = c;
    }
    /** Records an event (protobuf JSON of causality.event.v1.Event) and returns its id ("" if discarded). */
    track(event) {
        return check(this.c.track(typeof event === "string" ? event : JSON.stringify(event)));
    }
    screenView(screenName, previousScreen = "") {
        return this.track({ screenView: { screenName, previousScreen } });
    }
    buttonTap(buttonId, buttonText = "", screenName = "") {
        return this.track({ buttonTap: { buttonId, buttonText, screenName } });
    }
    productView(productId, productName, priceCents, currency) {
        return this.track({ productView: { productId, productName, priceCents, currency } });
    }
    addToCart(cartId, productId, quantity, priceCents, currency) {
        return this.track({ addToCart: { cartId, productId, quantity, priceCents, currency } });
    }
    purchase(orderId, totalCents, currency) {
        return this.track({ purchaseComplete: { orderId, totalCents, currency } });
    }
    /** An app-defined event; parameters keep their type (integer, float, boolean, string). */
    custom(eventName, params = {}) {
        const e = { stringParams: {}, intParams: {}, floatParams: {}, boolParams: {} };
        for (const [k, v] of Object.entries(params)) {
            if (typeof v === "boolean")
                e.boolParams[k] = v;
            else if (typeof v === "number")
                (Number.isInteger(v) ? e.intParams : e.floatParams)[k] = v;
            else
                e.stringParams[k] = String(v);
        }
        return this.track({ customEvent: { eventName, ...e } });
    }
    /** Records a sign-in and identifies the user. */
    login(userId, method = "") {
        this.identify(userId);
        return this.track({ userLogin: { userId, method } });
    }
    identify(userId) {
        check(this.c.identify(userId));
    }
    /** Forgets the user and starts a new session. */
    reset() {
        this.c.reset();
    }
    setConsent(state) {
        check(this.c.setConsent(state));
    }
    optOut(out) {
        check(this.c.optOut(out));
    }
    /** Resolves once every event tracked before is acknowledged by the collector. */
    flush(timeoutMs = 10000) {
        return this.c.flush(timeoutMs);
    }
    /** Flushes and stops the client; unsent events are lost (the queue is in memory). */
    close(timeoutMs = 10000) {
        this.unwatch?.();
        return this.c.close(timeoutMs);
    }
    stats() {
        return this.c.stats();
    }
    /** Hidden page = background (sends at once); visible again = foreground. */
    watchLifecycle() {
        const doc = globalThis.document;
        if (!doc || this.unwatch)
            return;
        const onChange = () => (doc.visibilityState === "hidden" ? this.c.background() : this.c.foreground());
        doc.addEventListener("visibilitychange", onChange);
        this.unwatch = () => doc.removeEventListener("visibilitychange", onChange);
    }
}
