package dev.causality;

import dev.causality.mobile.Client;
import dev.causality.mobile.Config;
import dev.causality.mobile.Items;
import dev.causality.mobile.Mobile;
import dev.causality.mobile.Params;
import dev.causality.mobile.Stats;
import java.io.File;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The Causality SDK for Android: a thin Java layer over the Go SDK bound by
 * gomobile ({@code dev.causality.mobile}, from causality.dev/sdk/mobile).
 *
 * <p>Tracking methods never block: they hand the event to the Go SDK, which
 * queues it in {@code storageDir} and sends it on one connection. The calls
 * that wait for the collector ({@link #flush}, {@link #close}) run on a
 * background thread of this object and return a {@link CompletableFuture},
 * so the UI thread never waits.
 *
 * <pre>{@code
 * Causality c = Causality.create("collector.example.com:7070", key,
 *     new File(context.getFilesDir(), "causality"),
 *     new Causality.Options().platform("android").appVersion(BuildConfig.VERSION_NAME));
 * // ProcessLifecycleOwner: ON_START -> c.onForeground(), ON_STOP -> c.onBackground()
 * c.screenView("Home", "");
 * }</pre>
 */
public final class Causality {
  /** Consent states, see {@link #setConsent}. */
  public static final int CONSENT_GRANTED = (int) Mobile.ConsentGranted;

  public static final int CONSENT_PENDING = (int) Mobile.ConsentPending;
  public static final int CONSENT_DENIED = (int) Mobile.ConsentDenied;

  /** How long {@link #onBackground} waits for the final flush, at most. */
  public static final long BACKGROUND_FLUSH_MS = 10_000;

  private final Client client;
  private final ExecutorService worker =
      Executors.newSingleThreadExecutor(
          r -> {
            Thread t = new Thread(r, "causality-flush");
            t.setDaemon(true);
            return t;
          });

  private Causality(Client client) {
    this.client = client;
  }

  /**
   * Returns a client for the collector at {@code addr}. {@code storageDir}
   * (e.g. {@code new File(context.getFilesDir(), "causality")}) keeps the
   * queue, install id, user id and opt-out across launches; null keeps them
   * in memory. It does not connect: the first event does.
   *
   * @throws IllegalArgumentException on a bad address, key or option, or an
   *     unusable storage dir
   */
  public static Causality create(String addr, String key, File storageDir, Options options) {
    Config cfg = (options == null ? new Options() : options).config;
    try {
      return new Causality(
          Mobile.newClient(addr, key, storageDir == null ? "" : storageDir.getPath(), cfg));
    } catch (Exception e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    }
  }

  /** Options of {@link #create}; unset numbers take the SDK's defaults. */
  public static final class Options {
    final Config config = new Config();

    /** "tcp" (default), "tls" or "ws". */
    public Options transport(String t) { config.setTransport(t); return this; }
    public Options flush(int events, long intervalMs) { config.setFlushEvents(events); config.setFlushIntervalMs(intervalMs); return this; }
    public Options queueLimits(int events, long bytes) { config.setQueueEvents(events); config.setQueueBytes(bytes); return this; }
    public Options sampleRate(double r) { config.setSampleRate(r); return this; }
    public Options backoff(long minMs, long maxMs) { config.setMinBackoffMs(minMs); config.setMaxBackoffMs(maxMs); return this; }
    public Options consent(int state) { config.setConsent(state); return this; }
    public Options deviceId(String id) { config.setDeviceID(id); return this; }
    public Options platform(String p) { config.setPlatform(p); return this; }
    public Options osVersion(String v) { config.setOSVersion(v); return this; }
    public Options appVersion(String v) { config.setAppVersion(v); return this; }
    public Options buildNumber(String v) { config.setBuildNumber(v); return this; }
    public Options device(String manufacturer, String model) { config.setManufacturer(manufacturer); config.setDeviceModel(model); return this; }
    public Options screen(int width, int height) { config.setScreenWidth(width); config.setScreenHeight(height); return this; }
    public Options locale(String bcp47) { config.setLocale(bcp47); return this; }
    public Options timezone(String iana) { config.setTimezone(iana); return this; }
    public Options network(String type) { config.setNetworkType(type); return this; }
    public Options carrier(String c) { config.setCarrier(c); return this; }
    public Options emulator(boolean e) { config.setEmulator(e); return this; }
  }

  /**
   * Records an event given as protobuf JSON of causality.event.v1.Event and
   * returns its id ("" when discarded by opt-out, consent or sampling).
   *
   * @throws IllegalArgumentException if the JSON is not an Event
   */
  public String trackJSON(String eventJSON) {
    try {
      return client.trackJSON(eventJSON);
    } catch (Exception e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    }
  }

  public void screenView(String screen, String previous) { client.screenView(screen, previous); }
  public void screenExit(String screen, long durationMs, String next) { client.screenExit(screen, durationMs, next); }
  public void buttonTap(String buttonId, String text, String screen) { client.buttonTap(buttonId, text, screen); }
  public void textInput(String fieldId, String screen, int length, long durationMs) { client.textInput(fieldId, screen, length, durationMs); }
  public void login(String userId, String method) { client.login(userId, method); }
  public void logout(String reason) { client.logout(reason); }
  public void signup(String userId, String method) { client.signup(userId, method); }
  public void productView(String productId, String name, long priceCents, String currency) { client.productView(productId, name, priceCents, currency); }
  public void addToCart(String cartId, String productId, int quantity, long priceCents, String currency) { client.addToCart(cartId, productId, quantity, priceCents, currency); }
  public void removeFromCart(String cartId, String productId, int quantity) { client.removeFromCart(cartId, productId, quantity); }
  public void checkoutStart(String cartId, int items, long totalCents, String currency) { client.checkoutStart(cartId, items, totalCents, currency); }
  public void purchaseFailed(String cartId, String errorCode, String message) { client.purchaseFailed(cartId, errorCode, message); }
  public void appStart(boolean cold, long launchMs, String source) { client.appStart(cold, launchMs, source); }
  public void appCrash(String type, String message, String stack, String screen) { client.appCrash(type, message, stack, screen); }

  /** An item of {@link #purchase}. */
  public static final class Item {
    final String productId, name;
    final int quantity;
    final long priceCents;

    public Item(String productId, String name, int quantity, long priceCents) {
      this.productId = productId;
      this.name = name;
      this.quantity = quantity;
      this.priceCents = priceCents;
    }
  }

  public void purchase(String orderId, long totalCents, String currency, Item... items) {
    Items list = Mobile.newItems();
    for (Item it : items) {
      list.add(it.productId, it.name, it.quantity, it.priceCents);
    }
    client.purchase(orderId, totalCents, currency, list);
  }

  /**
   * Records a change of connectivity: wifi, 2g, 3g, 4g, 5g, ethernet, offline or "".
   *
   * @throws IllegalArgumentException for another name
   */
  public void networkChange(String from, String to) {
    try {
      client.networkChange(from, to);
    } catch (Exception e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    }
  }

  /**
   * An app-defined event. Values keep their type when they are a String,
   * Boolean, Integer, Long, Float or Double; others are sent as strings.
   */
  public void custom(String name, Map<String, ?> params) {
    Params p = Mobile.newParams();
    if (params != null) {
      for (Map.Entry<String, ?> e : params.entrySet()) {
        Object v = e.getValue();
        if (v instanceof Boolean) p.putBool(e.getKey(), (Boolean) v);
        else if (v instanceof Integer || v instanceof Long) p.putInt(e.getKey(), ((Number) v).longValue());
        else if (v instanceof Float || v instanceof Double) p.putFloat(e.getKey(), ((Number) v).doubleValue());
        else p.putString(e.getKey(), String.valueOf(v));
      }
    }
    client.custom(name, p);
  }

  public void identify(String userId) { client.identify(userId); }

  /** Forgets the user and starts a new session. */
  public void reset() { client.reset(); }

  /** {@link #CONSENT_GRANTED}, {@link #CONSENT_PENDING} or {@link #CONSENT_DENIED}. */
  public void setConsent(int state) {
    try {
      client.setConsent(state);
    } catch (Exception e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    }
  }

  public void optOut(boolean out) { client.optOut(out); }

  /** The app came to the foreground (ProcessLifecycleOwner ON_START). */
  public void onForeground() { client.onForeground(); }

  /**
   * The app went to the background (ProcessLifecycleOwner ON_STOP): sends
   * what is queued at once. The future completes when it is acknowledged, or
   * fails after {@link #BACKGROUND_FLUSH_MS} (the events stay queued).
   */
  public CompletableFuture<Void> onBackground() {
    client.onBackground();
    return flush(BACKGROUND_FLUSH_MS);
  }

  /** Completes once every event tracked before is acknowledged, or fails after timeoutMs. */
  public CompletableFuture<Void> flush(long timeoutMs) {
    return run(() -> client.flush(timeoutMs));
  }

  /**
   * Flushes and stops the client; events not acknowledged within timeoutMs
   * stay in the storage dir for the next launch.
   */
  public CompletableFuture<Void> close(long timeoutMs) {
    CompletableFuture<Void> f = run(() -> client.close(timeoutMs));
    worker.shutdown();
    return f;
  }

  public Stats stats() { return client.stats(); }

  private interface GoCall {
    void call() throws Exception;
  }

  private CompletableFuture<Void> run(GoCall c) {
    CompletableFuture<Void> f = new CompletableFuture<>();
    try {
      worker.execute(
          () -> {
            try {
              c.call();
              f.complete(null);
            } catch (Exception e) {
              f.completeExceptionally(e);
            }
          });
    } catch (java.util.concurrent.RejectedExecutionException e) {
      f.completeExceptionally(new IllegalStateException("causality: client closed", e));
    }
    return f;
  }
}
