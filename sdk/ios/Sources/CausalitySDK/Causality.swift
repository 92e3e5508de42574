// The Causality SDK for iOS: a thin Swift layer over the Go SDK bound by
// gomobile (module Causality, classes CYMobile*, from causality.dev/sdk/mobile).
//
// Tracking never blocks: the event goes to the Go SDK, which queues it in the
// storage directory and sends it on one connection. Calls that wait for the
// collector (flush, close) run on a private serial queue and report through a
// completion handler, so the main thread never waits. Not compiled here (no
// Swift toolchain on Linux): `make mobile` proves the ObjC binding generates
// without skipped API; `make mobile-ios` builds the framework on macOS.

import Causality
import Foundation
#if canImport(UIKit)
import UIKit
#endif

public enum CausalityError: Error {
    case invalid(String)
}

public final class Causality {
    public enum Consent: Int {
        case granted = 0, pending = 1, denied = 2
    }

    /// Options of `init`; unset numbers take the SDK's defaults (docs/sdk.md).
    public struct Options {
        public var transport = "tcp" // "tcp", "tls" or "ws"
        public var flushEvents = 0
        public var flushIntervalMs = 0
        public var queueEvents = 0
        public var queueBytes: Int64 = 0
        public var sampleRate = 1.0
        public var consent = Consent.granted
        public var deviceID = ""
        public var appVersion = ""
        public var buildNumber = ""
        public var locale = Locale.current.identifier.replacingOccurrences(of: "_", with: "-")
        public var timezone = TimeZone.current.identifier
        public var networkType = "" // wifi, 2g, 3g, 4g, 5g, ethernet, offline
        public init() {}
    }

    /// How long the final flush after `onBackground` may take.
    public static let backgroundFlushMs = 10_000

    private let client: CYMobileClient
    private let worker = DispatchQueue(label: "dev.causality.flush")
    private var observers: [NSObjectProtocol] = []

    /// A client for the collector at `addr` (host:port). `storageDir` keeps
    /// the queue, install id, user id and opt-out across launches; by default
    /// Application Support/causality. It does not connect: the first event does.
    public init(addr: String, key: String, storageDir: URL? = nil, options: Options = Options()) throws {
        guard let cfg = CYMobileNewConfig() else { throw CausalityError.invalid("causality: no config") }
        cfg.transport = options.transport
        cfg.flushEvents = options.flushEvents
        cfg.flushIntervalMs = options.flushIntervalMs
        cfg.queueEvents = options.queueEvents
        cfg.queueBytes = options.queueBytes
        cfg.sampleRate = options.sampleRate
        cfg.consent = options.consent.rawValue
        cfg.deviceID = options.deviceID
        cfg.platform = "ios"
        cfg.appVersion = options.appVersion
        cfg.buildNumber = options.buildNumber
        cfg.locale = options.locale
        cfg.timezone = options.timezone
        cfg.networkType = options.networkType
        #if canImport(UIKit)
        cfg.osVersion = UIDevice.current.systemVersion
        cfg.deviceModel = UIDevice.current.model
        cfg.manufacturer = "Apple"
        let bounds = UIScreen.main.nativeBounds
        cfg.screenWidth = Int(bounds.width)
        cfg.screenHeight = Int(bounds.height)
        #endif
        let dir = try storageDir ?? FileManager.default
            .url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("causality", isDirectory: true)
        var err: NSError?
        guard let c = CYMobileNewClient(addr, key, dir.path, cfg, &err) else {
            throw CausalityError.invalid(err?.localizedDescription ?? "causality: could not create the client")
        }
        client = c
    }

    deinit {
        observers.forEach(NotificationCenter.default.removeObserver)
    }

    /// Records an event given as protobuf JSON of causality.event.v1.Event and
    /// returns its id ("" when discarded by opt-out, consent or sampling).
    @discardableResult
    public func track(json: String) throws -> String {
        do {
            return try client.trackJSON(json)
        } catch {
            throw CausalityError.invalid(error.localizedDescription)
        }
    }

    public func screenView(_ screen: String, previous: String = "") { client.screenView(screen, previous: previous) }
    public func screenExit(_ screen: String, durationMs: Int64, next: String = "") { client.screenExit(screen, durationMs: durationMs, next: next) }
    public func buttonTap(_ buttonID: String, text: String = "", screen: String = "") { client.buttonTap(buttonID, text: text, screen: screen) }
    public func textInput(_ fieldID: String, screen: String, length: Int, durationMs: Int64) { client.textInput(fieldID, screen: screen, length: length, durationMs: durationMs) }
    public func login(_ userID: String, method: String = "") { client.login(userID, method: method) }
    public func logout(reason: String = "") { client.logout(reason) }
    public func signup(_ userID: String, method: String = "") { client.signup(userID, method: method) }
    public func productView(_ productID: String, name: String, priceCents: Int64, currency: String) { client.productView(productID, name: name, priceCents: priceCents, currency: currency) }
    public func addToCart(cartID: String, productID: String, quantity: Int, priceCents: Int64, currency: String) { client.add(toCart: cartID, productID: productID, quantity: quantity, priceCents: priceCents, currency: currency) }
    public func removeFromCart(cartID: String, productID: String, quantity: Int) { client.remove(fromCart: cartID, productID: productID, quantity: quantity) }
    public func checkoutStart(cartID: String, items: Int, totalCents: Int64, currency: String) { client.checkoutStart(cartID, items: items, totalCents: totalCents, currency: currency) }
    public func purchaseFailed(cartID: String, errorCode: String, message: String) { client.purchaseFailed(cartID, errorCode: errorCode, message: message) }
    public func appStart(cold: Bool, launchMs: Int64, source: String = "") { client.appStart(cold, launchMs: launchMs, source: source) }
    public func appCrash(type: String, message: String, stack: String, screen: String) { client.appCrash(type, message: message, stack: stack, screen: screen) }

    public struct Item {
        public let productID: String, name: String, quantity: Int, priceCents: Int64
        public init(productID: String, name: String, quantity: Int, priceCents: Int64) {
            self.productID = productID; self.name = name; self.quantity = quantity; self.priceCents = priceCents
        }
    }

    public func purchase(orderID: String, totalCents: Int64, currency: String, items: [Item] = []) {
        let list = CYMobileNewItems()
        for it in items { list?.add(it.productID, name: it.name, quantity: it.quantity, priceCents: it.priceCents) }
        client.purchase(orderID, totalCents: totalCents, currency: currency, items: list)
    }

    /// wifi, 2g, 3g, 4g, 5g, ethernet, offline or "".
    public func networkChange(from: String, to: String) throws {
        try client.networkChange(from, to: to)
    }

    /// An app-defined event; Bool, Int, Double and String values keep their type.
    public func custom(_ name: String, params: [String: Any] = [:]) {
        let p = CYMobileNewParams()
        for (k, v) in params {
            switch v {
            case let b as Bool: p?.putBool(k, v: b)
            case let i as Int: p?.putInt(k, v: Int64(i))
            case let i as Int64: p?.putInt(k, v: i)
            case let d as Double: p?.putFloat(k, v: d)
            default: p?.putString(k, v: String(describing: v))
            }
        }
        client.custom(name, params: p)
    }

    public func identify(_ userID: String) { client.identify(userID) }
    /// Forgets the user and starts a new session.
    public func reset() { client.reset() }
    public func setConsent(_ c: Consent) { try? client.setConsent(c.rawValue) }
    public func optOut(_ out: Bool) { client.optOut(out) }

    public func onForeground() { client.onForeground() }

    /// Sends what is queued at once, inside a background task so that iOS
    /// lets the final flush finish (or `backgroundFlushMs` pass).
    public func onBackground() {
        client.onBackground()
        #if canImport(UIKit)
        var task = UIBackgroundTaskIdentifier.invalid
        task = UIApplication.shared.beginBackgroundTask(withName: "causality.flush") {
            UIApplication.shared.endBackgroundTask(task)
        }
        flush(timeoutMs: Causality.backgroundFlushMs) { _ in
            DispatchQueue.main.async { UIApplication.shared.endBackgroundTask(task) }
        }
        #endif
    }

    /// Calls onForeground/onBackground on the app's lifecycle notifications,
    /// and closes on willTerminate.
    public func observeLifecycle() {
        #if canImport(UIKit)
        let nc = NotificationCenter.default
        observers.append(nc.addObserver(forName: UIApplication.willEnterForegroundNotification, object: nil, queue: nil) { [weak self] _ in self?.onForeground() })
        observers.append(nc.addObserver(forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: nil) { [weak self] _ in self?.onBackground() })
        observers.append(nc.addObserver(forName: UIApplication.willTerminateNotification, object: nil, queue: nil) { [weak self] _ in
            try? self?.client.onTerminate(2_000) // iOS gives a few seconds; the rest stays queued
        })
        #endif
    }

    /// Completes once every event tracked before is acknowledged, or with an
    /// error after timeoutMs (the events stay queued).
    public func flush(timeoutMs: Int = 10_000, completion: @escaping (Error?) -> Void = { _ in }) {
        worker.async { [client] in
            do { try client.flush(timeoutMs); completion(nil) } catch { completion(error) }
        }
    }

    /// Flushes and stops the client; unacknowledged events stay in the storage
    /// directory for the next launch.
    public func close(timeoutMs: Int = 10_000, completion: @escaping (Error?) -> Void = { _ in }) {
        worker.async { [client] in
            do { try client.close(timeoutMs); completion(nil) } catch { completion(error) }
        }
    }

    public var stats: CYMobileStats? { client.stats() }
}
