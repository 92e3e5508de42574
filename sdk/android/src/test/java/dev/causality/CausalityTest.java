package dev.causality;

import java.io.File;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * Host-JVM test of the wrapper against the Go SDK built for linux/amd64
 * (libgojni.so) and a real collector. It is a plain main, not JUnit, so that
 * it needs nothing beyond the JDK; TestMobileJVM (services/cmd/causality)
 * runs it twice on one storage dir and checks Kafka:
 *
 * <pre>java -Djava.library.path=LIB -cp CLASSES dev.causality.CausalityTest first|second ADDR KEY DIR</pre>
 *
 * It prints "id UUID" for each event whose id it knows, "ok" at the end, and
 * exits 1 at the first failed check.
 */
public final class CausalityTest {
  private static void check(boolean ok, String what) {
    if (!ok) {
      System.err.println("FAIL: " + what);
      System.exit(1);
    }
  }

  private static void expectIllegal(Runnable r, String mention) {
    try {
      r.run();
    } catch (IllegalArgumentException e) {
      check(e.getMessage() != null && e.getMessage().contains(mention), "error \"" + e.getMessage() + "\" should mention " + mention);
      return;
    }
    check(false, "expected IllegalArgumentException mentioning " + mention);
  }

  public static void main(String[] args) throws Exception {
    check(args.length == 4, "usage: first|second ADDR KEY DIR");
    String phase = args[0], addr = args[1], key = args[2];
    File dir = new File(args[3]);
    Causality.Options opts = new Causality.Options().platform("android").appVersion("7.1.0").flush(5, 200).backoff(50, 1000);

    if (phase.equals("second")) {
      // A new launch on the same storage dir: install id and user persist.
      Causality c = Causality.create(addr, key, dir, opts);
      System.out.println("id " + c.trackJSON("{\"screenView\":{\"screenName\":\"java-second\"}}"));
      c.close(30_000).get(60, TimeUnit.SECONDS);
      check(c.stats().getAcked() == 1, "second launch acked " + c.stats().getAcked());
      System.out.println("ok");
      return;
    }

    expectIllegal(() -> Causality.create(addr, key, dir, new Causality.Options().transport("pigeon")), "transport");
    expectIllegal(() -> Causality.create(addr, "", dir, null), "key");
    expectIllegal(() -> Causality.create(addr, key, dir, new Causality.Options().network("6g")), "network type");

    Causality c = Causality.create(addr, key, dir, opts);
    expectIllegal(() -> c.trackJSON("{not json"), "event JSON");
    expectIllegal(() -> c.networkChange("wifi", "smoke"), "network type");
    expectIllegal(() -> c.setConsent(9), "consent");
    c.identify("java-user");
    for (int i = 0; i < 10; i++) {
      String id = c.trackJSON("{\"screenView\":{\"screenName\":\"java-json-" + i + "\"}}");
      check(id.length() == 36, "trackJSON returned id " + id);
      System.out.println("id " + id);
    }
    c.screenView("java-typed", "java-json-9");
    c.buttonTap("java-buy", "Buy", "java-typed");
    Map<String, Object> params = new LinkedHashMap<>();
    params.put("level", 3);
    params.put("hard", true);
    params.put("ratio", 0.25);
    params.put("name", "x");
    c.custom("java_custom", params);
    c.purchase("order-j", 300, "EUR", new Causality.Item("p1", "Pen", 2, 150));
    c.networkChange("wifi", "5g");

    c.onBackground().get(60, TimeUnit.SECONDS); // the final flush: all acknowledged
    check(c.stats().getAcked() == 15 && c.stats().getQueued() == 0, "after onBackground: acked " + c.stats().getAcked() + " queued " + c.stats().getQueued());
    c.onForeground();
    c.close(30_000).get(60, TimeUnit.SECONDS);
    try {
      c.flush(1000).get(10, TimeUnit.SECONDS);
      check(false, "flush after close succeeded");
    } catch (ExecutionException e) {
      check(e.getCause() instanceof IllegalStateException, "flush after close: " + e.getCause());
    }
    System.out.println("ok");
  }
}
