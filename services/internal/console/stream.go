package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

// maxBackfill bounds the backfill= of a stream, per partition.
const maxBackfill = 200

// Intervals of a stream's housekeeping messages.
var (
	statsEvery = 2 * time.Second
	pingEvery  = 15 * time.Second
	retryEvery = 2 * time.Second
)

// jsonOptions writes the protobuf field names, as rule paths and webhook
// bodies use them.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// filter is what a stream's query asks for.
type filter struct {
	app   string
	types map[string]bool // events: payload names; anomalies: kinds; firings: rule ids
}

// item is one message as a stream sends it.
type item struct {
	Partition int             `json:"partition"`
	Offset    int64           `json:"offset"`
	TimeMs    int64           `json:"time_ms"` // broker timestamp
	AppID     string          `json:"app_id"`
	Type      string          `json:"type"` // event type, anomaly kind or rule id
	Data      json.RawMessage `json:"data"`
}

// streamKind is one of the three live streams.
type streamKind struct {
	name  string
	topic func(c *Console) string
	// typeParam normalizes one value of the type= parameter.
	typeParam func(string) string
	// decode returns the message's app, type and JSON; skip says the
	// filter rejects it (cheap checks come before decoding).
	decode func(f *filter, m kafka.Message) (it item, skip bool, err error)
}

var eventsStream = streamKind{
	name:      "events",
	topic:     func(c *Console) string { return c.eventsTopic },
	typeParam: strings.ToLower,
	decode: func(f *filter, m kafka.Message) (item, bool, error) {
		if f.app != "" && m.AppID != "" && m.AppID != f.app { // the collector's app_id header
			return item{}, true, nil
		}
		if len(f.types) > 0 && !f.types[PayloadType(m.Value)] {
			return item{}, true, nil
		}
		e := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, e); err != nil {
			return item{}, false, err
		}
		if f.app != "" && e.GetAppId() != f.app {
			return item{}, true, nil
		}
		b, err := jsonOptions.Marshal(e)
		return item{AppID: e.GetAppId(), Type: eventType(e), Data: b}, false, err
	},
}

var anomaliesStream = streamKind{
	name:      "anomalies",
	topic:     func(c *Console) string { return c.cfg.AnomaliesTopic },
	typeParam: kindName,
	decode: func(f *filter, m kafka.Message) (item, bool, error) {
		a := &detectv1.Anomaly{}
		if err := proto.Unmarshal(m.Value, a); err != nil {
			return item{}, false, err
		}
		kind := a.GetKind().String()
		if (f.app != "" && a.GetAppId() != f.app) || (len(f.types) > 0 && !f.types[kind]) {
			return item{}, true, nil
		}
		b, err := jsonOptions.Marshal(a)
		return item{AppID: a.GetAppId(), Type: kind, Data: b}, false, err
	},
}

var firingsStream = streamKind{
	name:      "firings",
	topic:     func(c *Console) string { return c.cfg.FiringsTopic },
	typeParam: func(s string) string { return s },
	decode: func(f *filter, m kafka.Message) (item, bool, error) {
		r := &adminv1.RuleFiring{}
		if err := proto.Unmarshal(m.Value, r); err != nil {
			return item{}, false, err
		}
		if (f.app != "" && r.GetAppId() != f.app) || (len(f.types) > 0 && !f.types[r.GetRuleId()]) {
			return item{}, true, nil
		}
		b, err := jsonOptions.Marshal(r)
		return item{AppID: r.GetAppId(), Type: r.GetRuleId(), Data: b}, false, err
	},
}

// kindName accepts "funnel_bypass" or "ANOMALY_KIND_FUNNEL_BYPASS".
func kindName(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(s, "ANOMALY_KIND_") {
		s = "ANOMALY_KIND_" + s
	}
	return s
}

// payload is the Event's payload oneof: field number -> field name.
var payloadFields = func() map[protowire.Number]string {
	od := (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	m := map[protowire.Number]string{}
	for i := range od.Fields().Len() {
		fd := od.Fields().Get(i)
		m[fd.Number()] = string(fd.Name())
	}
	return m
}()

// PayloadType returns the payload name ("screen_view") of an encoded
// Event without decoding it: the last payload field present, as protobuf
// decoding would keep. "" when there is none or the bytes are malformed.
func PayloadType(b []byte) string {
	var name string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if s, ok := payloadFields[num]; ok && typ == protowire.BytesType {
			name = s
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return name
}

func eventType(e *eventv1.Event) string {
	m := e.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("payload")); fd != nil {
		return string(fd.Name())
	}
	return ""
}

// limiter is a token bucket: rate tokens a second, at most burst.
type limiter struct {
	rate, burst, tokens float64
	last                time.Time
}

func (l *limiter) allow(now time.Time) bool {
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// streamStats are sent to the browser every few seconds.
type streamStats struct {
	Read     int64 `json:"read"`
	Filtered int64 `json:"filtered"`
	Sent     int64 `json:"sent"`
	Dropped  int64 `json:"dropped"` // over the rate
	Bad      int64 `json:"bad"`     // undecodable
}

// sse writes server-sent events; safe for concurrent use.
type sse struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, s.err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}

func (s *sse) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

func (s *sse) comment(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, s.err = fmt.Fprintf(s.w, ": %s\n\n", text); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}

// serveStream streams a topic as server-sent events: "ready" once the
// tail is positioned, "item" per message that passes the filter (and the
// rate), "stats" every few seconds, "waiting" while the topic does not
// exist, "error" when reading fails (it is retried). It ends when the
// client goes away or shutdown ends.
func (c *Console) serveStream(shutdown context.Context, w http.ResponseWriter, r *http.Request, kind streamKind) {
	q := r.URL.Query()
	f := &filter{app: strings.TrimSpace(q.Get("app_id"))}
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if f.types == nil {
					f.types = map[string]bool{}
				}
				f.types[kind.typeParam(t)] = true
			}
		}
	}
	backfill, err := intParam(q.Get("backfill"), 0, 0, maxBackfill)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "backfill: "+err.Error())
		return
	}
	rate := c.cfg.MaxRate
	if v := q.Get("rate"); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x <= 0 {
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "rate: want a positive number")
			return
		}
		rate = min(rate, x)
	}
	if c.streams.Add(1) > int64(c.cfg.MaxStreams) {
		c.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", fmt.Sprintf("the console serves at most %d live streams at once", c.cfg.MaxStreams))
		return
	}
	defer c.streams.Add(-1)
	gauge := c.metrics.streams.WithLabelValues(kind.name)
	gauge.Inc()
	defer gauge.Dec()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stopOnShutdown := context.AfterFunc(shutdown, cancel)
	defer stopOnShutdown()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := &sse{w: w, rc: http.NewResponseController(w)}
	if err := out.comment("causality console " + kind.name); err != nil {
		return
	}

	var mu sync.Mutex // guards st
	var st streamStats
	housekeeping := make(chan struct{})
	defer func() { cancel(); <-housekeeping }() // no write after the handler returned
	go func() {
		defer close(housekeeping)
		stats := time.NewTicker(statsEvery)
		defer stats.Stop()
		ping := time.NewTicker(pingEvery)
		defer ping.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stats.C:
				mu.Lock()
				s := st
				mu.Unlock()
				if out.send("stats", s) != nil {
					cancel()
				}
			case <-ping.C:
				if out.comment("ping") != nil {
					cancel()
				}
			}
		}
	}()

	count := func(result string, field *int64) {
		mu.Lock()
		*field++
		mu.Unlock()
		c.metrics.items.WithLabelValues(kind.name, result).Inc()
	}
	topic := kind.topic(c)
	lim := &limiter{rate: rate, burst: max(rate, 1), tokens: max(rate, 1), last: time.Now()}
	tc := kafka.TailConfig{Topic: topic, Backfill: backfill}
	for ctx.Err() == nil {
		err := c.source(ctx, tc, func(partitions int) {
			// The backfill may come at once.
			lim.burst = max(lim.burst, float64(backfill*partitions))
			lim.tokens = lim.burst
			_ = out.send("ready", map[string]any{"topic": topic, "partitions": partitions, "backfill": backfill, "rate": rate})
		}, func(m kafka.Message) error {
			mu.Lock()
			st.Read++
			mu.Unlock()
			it, skip, err := kind.decode(f, m)
			switch {
			case err != nil:
				count("undecodable", &st.Bad)
				return nil
			case skip:
				count("filtered", &st.Filtered)
				return nil
			case !lim.allow(time.Now()):
				count("dropped", &st.Dropped)
				return nil
			}
			it.Partition, it.Offset, it.TimeMs = m.Partition, m.Offset, m.Time.UnixMilli()
			count("sent", &st.Sent)
			return out.send("item", it)
		})
		if ctx.Err() != nil || out.failed() {
			return // the client went away
		}
		tc.Backfill = 0 // a retry starts at the end
		if errors.Is(err, kafka.ErrNoTopic) {
			_ = out.send("waiting", map[string]string{"topic": topic, "reason": "the topic does not exist yet"})
		} else {
			if err == nil {
				err = errors.New("the tail ended")
			}
			c.logger.Warn("console stream", "stream", kind.name, "topic", topic, "err", err)
			if out.send("error", map[string]string{"topic": topic, "message": err.Error()}) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryEvery):
		}
	}
}

// intParam parses an optional integer within [lo, hi].
func intParam(s string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("want an integer")
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is outside %d..%d", n, lo, hi)
	}
	return n, nil
}
