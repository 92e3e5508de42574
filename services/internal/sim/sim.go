// Package sim simulates a fleet of app installs sending events to a
// collector. Fleet (fleet.go) turns a seed and a clock into realistic events
// over the whole catalogue (sessions, screens, funnels, crashes, ...); Run
// sends them at a target rate through the collector's raw TCP protocol
// (client.go: Hello/Welcome, credits, acks, retries, Drain) and returns a
// Summary of what was acknowledged. Devices are multiplexed over a few
// connections: a real SDK holds one connection per device.
package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Config says what to simulate and where to send it.
type Config struct {
	Addr         string
	Key          string
	App          string // "" = the app of the key (from Welcome)
	Devices      int
	Rate         float64       // events per second in total; 0 = as fast as the collector acks
	Duration     time.Duration // 0 = until Events are sent or ctx ends
	Events       int64         // stop after this many events; 0 = no limit
	Connections  int
	Seed         uint64
	BatchSize    int
	Linger       time.Duration
	FlushTimeout time.Duration
	KeepIDs      bool // keep the acknowledged event ids in the Summary
	// Source, when set, replaces the fleet: Run sends its events in order
	// (Timed.Device picks the connection, so a device's events stay in
	// order) until it returns false. The labelled evaluation sends
	// scenarios (scenario.go) this way, on their simulated clock.
	Source func() (Timed, bool)
}

// RegisterFlags registers the -sim.* flags (the key is left to the caller,
// which may read it from a file).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "sim.addr", "127.0.0.1:7070", "collector raw TCP address")
	fs.StringVar(&c.App, "sim.app", "", "app_id of the events (default: the key's app, from Welcome; another app shows app_mismatch rejections)")
	fs.IntVar(&c.Devices, "sim.devices", 1000, "simulated app installs")
	fs.Float64Var(&c.Rate, "sim.rate", 500, "target events per second over the whole fleet (0 = as fast as the collector acknowledges)")
	fs.DurationVar(&c.Duration, "sim.duration", 30*time.Second, "how long to generate events (0 = until -sim.events or Ctrl-C)")
	fs.Int64Var(&c.Events, "sim.events", 0, "stop after this many events (0 = no limit)")
	fs.IntVar(&c.Connections, "sim.connections", 4, "TCP connections the devices are multiplexed over (a real SDK has one per device; thousands of connections would only measure the 2-core machine's scheduler)")
	fs.Uint64Var(&c.Seed, "sim.seed", 1, "seed of the fleet: the same seed gives the same devices and flows")
	fs.IntVar(&c.BatchSize, "sim.batch", 200, "most events per batch (also capped by Welcome.max_batch_events)")
	fs.DurationVar(&c.Linger, "sim.linger", 20*time.Millisecond, "how long a partial batch waits for more events")
	fs.DurationVar(&c.FlushTimeout, "sim.flush-timeout", 30*time.Second, "after generating, how long to wait for the last acks")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("-sim.addr is required")
	case c.Key == "":
		return errors.New("no ingest key given")
	case c.Devices < 1:
		return fmt.Errorf("-sim.devices: %d is below 1", c.Devices)
	case c.Rate < 0:
		return fmt.Errorf("-sim.rate: %g is negative", c.Rate)
	case c.Duration < 0 || c.Events < 0:
		return errors.New("-sim.duration and -sim.events must not be negative")
	case c.Connections < 1 || c.Connections > 1000:
		return fmt.Errorf("-sim.connections: %d is outside 1..1000", c.Connections)
	case c.BatchSize < 1:
		return fmt.Errorf("-sim.batch: %d is below 1", c.BatchSize)
	case c.Linger < 0 || c.FlushTimeout <= 0:
		return errors.New("-sim.linger must not be negative and -sim.flush-timeout must be positive")
	}
	return nil
}

func (c *Config) maxPending() int { return max(8*c.BatchSize, 2000) }

// Progress is a snapshot taken while the simulation runs.
type Progress struct {
	Elapsed   time.Duration
	Target    time.Duration // the configured duration, 0 if none
	Generated int64
	Acked     int64
	Rejected  int64
	Retries   int64
}

// Summary is the outcome of a run.
type Summary struct {
	App         string
	Devices     int
	Connections int
	Generated   int64            // events the fleet made
	Sent        int64            // distinct events sent at least once
	Accepted    int64            // acknowledged as accepted
	Duplicate   int64            // acknowledged as duplicate (already stored)
	Rejected    map[string]int64 // invalid events by reason
	Retries     int64            // sends of an event after its first
	RateLimited int64            // rate_limited results (each one retried)
	RetryResult int64            // retry results (each one retried)
	Reconnects  int64            // connections lost
	Drains      int64            // Drain frames obeyed
	Unacked     int64            // generated but neither acknowledged nor rejected at the end
	Elapsed     time.Duration
	AckP50      time.Duration // batch sent → its Ack
	AckP99      time.Duration
	AckedIDs    []string // event ids acknowledged (Config.KeepIDs)
}

// Acked is the number of events the collector durably took.
func (s *Summary) Acked() int64 { return s.Accepted + s.Duplicate }

// Rate is acknowledged events per second.
func (s *Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Acked()) / s.Elapsed.Seconds()
}

// RejectedTotal sums Rejected.
func (s *Summary) RejectedTotal() int64 {
	var n int64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// WriteText prints the summary for people.
func (s *Summary) WriteText(w io.Writer) {
	fmt.Fprintf(w, "simulated %d devices of app %q over %d connections for %s\n", s.Devices, s.App, s.Connections, s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  generated     %d\n", s.Generated)
	fmt.Fprintf(w, "  sent          %d (retries %d: %d rate_limited, %d retry results, %d reconnects, %d drains)\n", s.Sent, s.Retries, s.RateLimited, s.RetryResult, s.Reconnects, s.Drains)
	fmt.Fprintf(w, "  acknowledged  %d (accepted %d, duplicate %d)\n", s.Acked(), s.Accepted, s.Duplicate)
	fmt.Fprintf(w, "  rejected      %d", s.RejectedTotal())
	for _, k := range slices.Sorted(maps.Keys(s.Rejected)) {
		fmt.Fprintf(w, " %s=%d", k, s.Rejected[k])
	}
	fmt.Fprintln(w)
	if s.Unacked > 0 {
		fmt.Fprintf(w, "  unacknowledged %d (the run ended before their acks)\n", s.Unacked)
	}
	fmt.Fprintf(w, "  rate          %.0f events/s acknowledged\n", s.Rate())
	fmt.Fprintf(w, "  ack latency   p50 %s, p99 %s\n", s.AckP50.Round(10*time.Microsecond), s.AckP99.Round(10*time.Microsecond))
}

// stats are the counters shared by the links.
type stats struct {
	generated, sent, retries, accepted, duplicate, rejected atomic.Int64
	rateLimited, retryResults, reconnects, drains, connects atomic.Int64

	mu        sync.Mutex
	reasons   map[string]int64
	latencies []time.Duration
	keepIDs   bool
	ids       []string
}

func (s *stats) observe(d time.Duration) {
	s.mu.Lock()
	s.latencies = append(s.latencies, d)
	s.mu.Unlock()
}

func (s *stats) acked(id string, dup bool) {
	if dup {
		s.duplicate.Add(1)
	} else {
		s.accepted.Add(1)
	}
	if s.keepIDs {
		s.mu.Lock()
		s.ids = append(s.ids, id)
		s.mu.Unlock()
	}
}

func (s *stats) reject(reason string) {
	s.rejected.Add(1)
	s.mu.Lock()
	s.reasons[reason]++
	s.mu.Unlock()
}

// Run simulates the fleet until Duration or Events or ctx ends, then waits up
// to FlushTimeout (5 s after ctx ended) for the outstanding acks. progress,
// if not nil, is called about four times a second. It fails at once when the
// collector cannot be reached or refuses the key.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, progress func(Progress)) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	first, err := dial(ctx, cfg.Addr, cfg.Key)
	if err != nil {
		return nil, err
	}
	app := cfg.App
	if app == "" {
		app = first.welcome.GetAppId()
	}
	fleet := NewFleet(cfg.Seed, cfg.Devices, app)
	st := &stats{reasons: map[string]int64{}, keepIDs: cfg.KeepIDs}
	st.connects.Add(1)
	start := time.Now()

	// Links run on their own context: it outlives ctx by a grace period so
	// the last acks come in, and the flush timeout bounds the wait.
	lctx, cancelLinks := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLinks()
	generated := make(chan struct{})
	go func() {
		select {
		case <-generated:
		case <-ctx.Done():
			select {
			case <-time.After(5 * time.Second):
			case <-lctx.Done():
			}
			cancelLinks()
			return
		}
		select {
		case <-time.After(cfg.FlushTimeout):
		case <-ctx.Done():
			select {
			case <-time.After(5 * time.Second):
			case <-lctx.Done():
			}
		case <-lctx.Done():
		}
		cancelLinks()
	}()

	links := make([]*link, cfg.Connections)
	g, gctx := errgroup.WithContext(lctx)
	for i := range links {
		links[i] = &link{cfg: &cfg, in: make(chan *item, cfg.BatchSize), st: st, logger: logger.With("conn", i)}
		if i == 0 {
			links[i].c = first
		}
		l := links[i]
		g.Go(func() error { return l.run(gctx) })
	}

	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if progress != nil {
		progressDone.Go(func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					progress(Progress{
						Elapsed: time.Since(start), Target: cfg.Duration, Generated: st.generated.Load(),
						Acked: st.accepted.Load() + st.duplicate.Load(), Rejected: st.rejected.Load(), Retries: st.retries.Load(),
					})
				}
			}
		})
	}

	generate(ctx, gctx, &cfg, fleet, links, st, start)
	close(generated)
	for _, l := range links {
		close(l.in)
	}
	err = g.Wait()
	close(stopProgress)
	progressDone.Wait()
	if err != nil {
		return nil, err
	}

	sum := &Summary{
		App: app, Devices: cfg.Devices, Connections: cfg.Connections,
		Generated: st.generated.Load(), Sent: st.sent.Load(), Accepted: st.accepted.Load(), Duplicate: st.duplicate.Load(),
		Rejected: st.reasons, Retries: st.retries.Load(), RateLimited: st.rateLimited.Load(), RetryResult: st.retryResults.Load(),
		Reconnects: st.reconnects.Load(), Drains: st.drains.Load(), Elapsed: time.Since(start), AckedIDs: st.ids,
	}
	sum.Unacked = sum.Generated - sum.Acked() - sum.RejectedTotal()
	sort.Slice(st.latencies, func(i, j int) bool { return st.latencies[i] < st.latencies[j] })
	if n := len(st.latencies); n > 0 {
		sum.AckP50, sum.AckP99 = st.latencies[n/2], st.latencies[min(n-1, n*99/100)]
	}
	return sum, nil
}

// generate makes events at the target rate and hands each to the link of its
// device, until the duration or event count is reached or ctx ends. A link
// that is full blocks it: the achieved rate then drops below the target.
func generate(ctx, lctx context.Context, cfg *Config, fleet *Fleet, links []*link, st *stats, start time.Time) {
	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration - time.Since(start))
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var n int64
	for {
		due := n + int64(cfg.BatchSize)
		if cfg.Rate > 0 {
			due = int64(time.Since(start).Seconds()*cfg.Rate) + 1
		}
		if cfg.Events > 0 {
			due = min(due, cfg.Events)
		}
		for ; n < due; n++ {
			var it *item
			var dev int
			if cfg.Source != nil {
				t, ok := cfg.Source()
				if !ok {
					return
				}
				it, dev = &item{ev: t.Event, skew: t.Skew}, t.Device
			} else {
				var ev *eventv1.Event
				ev, dev = fleet.Next(time.Now())
				it = &item{ev: ev, skew: fleet.Skew(dev)}
			}
			select {
			case links[dev%len(links)].in <- it:
				st.generated.Add(1)
			case <-deadline:
				return
			case <-ctx.Done():
				return
			case <-lctx.Done(): // a link failed
				return
			}
		}
		if cfg.Events > 0 && n >= cfg.Events {
			return
		}
		if cfg.Rate > 0 {
			select {
			case <-tick.C:
			case <-deadline:
				return
			case <-ctx.Done():
				return
			case <-lctx.Done():
				return
			}
		}
	}
}
