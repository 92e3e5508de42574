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
export declare enum Consent {
    Granted = 0,
    Pending = 1,
    Denied = 2
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
/** Loads the wasm module (once) and returns a client. */
export declare function init(opts: Options): Promise<Client>;
/** A client. Tracking never blocks; flush and close return Promises. */
export declare class Client {
    private readonly c;
    private unwatch?;
    constructor(c: GoClient);
    /** Records an event (protobuf JSON of causality.event.v1.Event) and returns its id ("" if discarded). */
    track(event: Event | string): string;
    screenView(screenName: string, previousScreen?: string): string;
    buttonTap(buttonId: string, buttonText?: string, screenName?: string): string;
    productView(productId: string, productName: string, priceCents: number, currency: string): string;
    addToCart(cartId: string, productId: string, quantity: number, priceCents: number, currency: string): string;
    purchase(orderId: string, totalCents: number, currency: string): string;
    /** An app-defined event; parameters keep their type (integer, float, boolean, string). */
    custom(eventName: string, params?: Record<string, string | number | boolean>): string;
    /** Records a sign-in and identifies the user. */
    login(userId: string, method?: string): string;
    identify(userId: string): void;
    /** Forgets the user and starts a new session. */
    reset(): void;
    setConsent(state: Consent): void;
    optOut(out: boolean): void;
    /** Resolves once every event tracked before is acknowledged by the collector. */
    flush(timeoutMs?: number): Promise<void>;
    /** Flushes and stops the client; unsent events are lost (the queue is in memory). */
    close(timeoutMs?: number): Promise<void>;
    stats(): Stats;
    /** Hidden page = background (sends at once); visible again = foreground. */
    watchLifecycle(): void;
}
export {};
