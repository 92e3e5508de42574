package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/detect"
	"causality.dev/services/internal/kafka"
)

// FiringsTopic is where every firing is written.
const FiringsTopic = "causality.rules.firings.v1"

// Config says where the rules are and bounds the engine's memory.
type Config struct {
	File           string        // protobuf JSON of causality.admin.v1.RuleSet; "" = rules off
	FiringsTopic   string        // every RuleFiring, key = app id
	ReloadInterval time.Duration // how often File's modification time is checked
	MaxKeys        int           // devices or apps with state, per rule
	DedupSize      int           // event and anomaly ids remembered, so a redelivered one is not counted twice
	MaxInflight    int           // webhook deliveries under way at once
}

// RegisterFlags registers the -rules.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.File, "rules.file", "", "rules and webhooks to evaluate on the events and anomalies (protobuf JSON of causality.admin.v1.RuleSet, written by the admin API), reloaded when it changes; empty = no rules engine")
	fs.StringVar(&c.FiringsTopic, "rules.firings-topic", FiringsTopic, "topic every rule firing is written to (key = app id, value = causality.admin.v1.RuleFiring)")
	fs.DurationVar(&c.ReloadInterval, "rules.reload-interval", time.Second, "how often -rules.file is checked for changes")
	fs.IntVar(&c.MaxKeys, "rules.max-keys", 100_000, "devices (or apps) with rate or cooldown state, per rule; beyond it new ones do not fire")
	fs.IntVar(&c.DedupSize, "rules.dedup-size", 100_000, "event and anomaly ids remembered so that a redelivered one is evaluated once")
	fs.IntVar(&c.MaxInflight, "rules.max-inflight", 64, "webhook deliveries of rule firings under way at once; beyond it evaluation waits")
}

// Enabled reports whether a rules file is configured.
func (c *Config) Enabled() bool { return c.File != "" }

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if err := CheckTopic(c.FiringsTopic); err != nil {
		return fmt.Errorf("-rules.firings-topic: %w", err)
	}
	switch {
	case c.ReloadInterval < 10*time.Millisecond:
		return errors.New("-rules.reload-interval must be at least 10ms")
	case c.MaxKeys < 1:
		return errors.New("-rules.max-keys must be at least 1")
	case c.DedupSize < 1:
		return errors.New("-rules.dedup-size must be at least 1")
	case c.MaxInflight < 1:
		return errors.New("-rules.max-inflight must be at least 1")
	}
	return nil
}

// RecordWriter writes records to one Kafka topic (kafka.Writer).
type RecordWriter interface {
	Write(ctx context.Context, records []kafka.Record) error
}

// Deliverer delivers a body at most once per id (webhook.Sender).
type Deliverer interface {
	Deliver(ctx context.Context, id string, body []byte) error
}

// Outputs are where firings go.
type Outputs struct {
	// Firings receives every firing.
	Firings RecordWriter
	// Topic opens a writer for the topic of a Kafka action (once per topic).
	Topic func(ctx context.Context, topic string) (RecordWriter, error)
	// Webhook builds the delivery of a webhook of the set, with its URL and
	// secret (again when they change).
	Webhook func(w *adminv1.Webhook) (Deliverer, error)
}

// Engine evaluates the rules of a Set on events and anomalies and carries
// out the actions of those that fire. The set is swapped by Load (Run
// reloads the file); rate and cooldown state survive a reload for rules
// whose id is unchanged.
type Engine struct {
	cfg    Config
	out    Outputs
	logger *slog.Logger
	m      metrics
	set    atomic.Pointer[Set]

	loadMu sync.Mutex // one Load at a time
	hooks  atomic.Pointer[map[string]*hook]

	mu        sync.Mutex // guards states, seen, evaluated, buf
	states    map[string]*ruleState
	seen      *idSet
	evaluated uint64
	buf       []value

	flushMu sync.Mutex // guards pending, topics
	pending []*pending
	topics  map[string]RecordWriter

	inflight  chan struct{}
	wg        sync.WaitGroup
	hookCtx   context.Context
	hookStop  context.CancelFunc
	lastStat  fs.FileInfo
	lastError string
}

type hook struct {
	w *adminv1.Webhook
	d Deliverer
}

// pending is a firing whose actions are not all done.
type pending struct {
	f        *adminv1.RuleFiring
	actions  []*adminv1.Action
	recorded bool         // in the firings topic
	done     map[int]bool // action index
}

type metrics struct {
	matches, firings  *prometheus.CounterVec
	actions           *prometheus.CounterVec
	loaded            prometheus.Gauge
	reloadErrors      prometheus.Counter
	evaluations       prometheus.Counter
	duplicates        prometheus.Counter
	refused           *prometheus.CounterVec
	stateKeys         prometheus.Gauge
	webhooksInflight  prometheus.Gauge
	firingWriteErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		matches:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_rules_matches_total", Help: "Events or anomalies that satisfied a rule's condition (before its rate and cooldown), by rule id."}, []string{"rule"}),
		firings:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_rules_firings_total", Help: "Firings, by rule id."}, []string{"rule"}),
		actions:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_rules_actions_total", Help: "Actions carried out, by rule id, action (webhook, kafka) and result (ok, error)."}, []string{"rule", "action", "result"}),
		loaded:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_rules_loaded", Help: "Enabled rules in the current set."}),
		reloadErrors:      prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_rules_reload_errors_total", Help: "Rules files that could not be read, parsed or compiled (the previous rules stayed)."}),
		evaluations:       prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_rules_evaluations_total", Help: "Rule conditions evaluated: the index keeps this near the number of rules that can match each event."}),
		duplicates:        prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_rules_duplicates_total", Help: "Events or anomalies seen before (redelivered), not evaluated again."}),
		refused:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_rules_state_refused_total", Help: "Matches not counted because the rule had -rules.max-keys devices or apps with state, by rule id."}, []string{"rule"}),
		stateKeys:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_rules_state_keys", Help: "Devices and apps with rate or cooldown state, all rules."}),
		webhooksInflight:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_rules_webhooks_inflight", Help: "Webhook deliveries of firings under way."}),
		firingWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_rules_firing_write_errors_total", Help: "Failed writes of firings to the firings topic (retried)."}),
	}
	for _, c := range []prometheus.Collector{m.matches, m.firings, m.actions, m.loaded, m.reloadErrors, m.evaluations, m.duplicates, m.refused, m.stateKeys, m.webhooksInflight, m.firingWriteErrors} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("register rules metrics: %w", err)
		}
	}
	return m, nil
}

// New returns an engine with no rules; Load or Reload gives it some.
func New(cfg Config, out Outputs, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if cfg.MaxKeys < 1 || cfg.DedupSize < 1 || cfg.MaxInflight < 1 {
		return nil, errors.New("rules engine: MaxKeys, DedupSize and MaxInflight must be at least 1 (call Config.Validate)")
	}
	if out.Firings == nil || out.Topic == nil || out.Webhook == nil {
		return nil, errors.New("rules engine: Firings, Topic and Webhook outputs are required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, out: out, logger: logger, m: m, states: map[string]*ruleState{}, seen: newIDSet(cfg.DedupSize),
		topics: map[string]RecordWriter{}, inflight: make(chan struct{}, cfg.MaxInflight), buf: make([]value, 0, 16)}
	e.hookCtx, e.hookStop = context.WithCancel(context.Background())
	empty, _ := Compile(nil)
	e.set.Store(empty)
	e.hooks.Store(&map[string]*hook{})
	return e, nil
}

// Set is the current rule set.
func (e *Engine) Set() *Set { return e.set.Load() }

// Load compiles rs and swaps it in. On error the current set stays.
func (e *Engine) Load(rs *adminv1.RuleSet) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	s, err := Compile(rs)
	if err != nil {
		return err
	}
	old := *e.hooks.Load()
	hooks := make(map[string]*hook, len(s.webhooks))
	for id, w := range s.webhooks {
		if h := old[id]; h != nil && h.w.GetUrl() == w.GetUrl() && h.w.GetSecret() == w.GetSecret() {
			hooks[id] = h // keeps what it delivered
			continue
		}
		d, err := e.out.Webhook(w)
		if err != nil {
			return fmt.Errorf("webhook %q: %w", id, err)
		}
		hooks[id] = &hook{w: w, d: d}
	}
	prev := e.set.Load()
	e.mu.Lock()
	keep := map[string]bool{}
	for _, r := range s.rules {
		keep[r.id] = true
	}
	for id := range e.states {
		if !keep[id] {
			delete(e.states, id)
		}
	}
	e.hooks.Store(&hooks)
	e.set.Store(s)
	e.mu.Unlock()
	for _, r := range prev.rules {
		if !keep[r.id] {
			e.m.matches.DeleteLabelValues(r.id)
			e.m.firings.DeleteLabelValues(r.id)
			e.m.refused.DeleteLabelValues(r.id)
			e.m.actions.DeletePartialMatch(prometheus.Labels{"rule": r.id})
		}
	}
	e.m.loaded.Set(float64(s.Len()))
	return nil
}

// ReadFile reads a RuleSet file: protobuf JSON; a missing or empty file is
// the empty set.
func ReadFile(path string) (*adminv1.RuleSet, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &adminv1.RuleSet{}, nil
	}
	if err != nil {
		return nil, err
	}
	rs := &adminv1.RuleSet{}
	if len(bytes.TrimSpace(b)) == 0 {
		return rs, nil
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, rs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rs, nil
}

// Reload loads cfg.File now. A file that cannot be read, parsed or compiled
// is logged and counted, and the current rules stay.
func (e *Engine) Reload() error {
	e.lastStat, _ = os.Stat(e.cfg.File) // before reading: a later change is seen by Run
	rs, err := ReadFile(e.cfg.File)
	if err == nil {
		err = e.Load(rs)
	}
	if err != nil {
		e.m.reloadErrors.Inc()
		if msg := err.Error(); msg != e.lastError { // once per new error, not every poll
			e.logger.Error("rules not reloaded; the previous rules stay", "file", e.cfg.File, "err", err)
			e.lastError = msg
		}
		return err
	}
	e.lastError = ""
	s := e.set.Load()
	e.logger.Info("rules loaded", "file", e.cfg.File, "rules", len(s.rules), "enabled", s.Len(), "webhooks", len(s.webhooks))
	return nil
}

// Run reloads the rules file whenever its modification time, size or
// inode changes, checked every ReloadInterval, until ctx ends. The caller
// loads it once with Reload before events flow (Run does not call Reload
// concurrently with it).
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		e.updateStateGauge()
		fi, err := os.Stat(e.cfg.File)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if sameFile(fi, e.lastStat) {
			continue
		}
		_ = e.Reload() // logged and counted
	}
}

func sameFile(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size() && os.SameFile(a, b)
}

func (e *Engine) updateStateGauge() {
	e.mu.Lock()
	n := 0
	for _, s := range e.states {
		n += len(s.keys)
	}
	e.mu.Unlock()
	e.m.stateKeys.Set(float64(n))
}

// Close waits up to grace for the webhook deliveries under way, then
// abandons the rest (their ids were not marked delivered: they were not),
// and closes the writers of the Kafka actions. Call it once the inputs
// have stopped.
func (e *Engine) Close(grace time.Duration) {
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		e.logger.Warn("rules: abandoning webhook deliveries under way at shutdown")
		e.hookStop()
		<-done
	}
	e.hookStop()
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	for _, w := range e.topics {
		if c, ok := w.(io.Closer); ok {
			c.Close()
		}
	}
}

// HandleEvents evaluates the rules on events and carries out the actions
// of the firings. It fails only when a firing cannot be written to Kafka;
// called again with the same events (a consumer retrying its batch), it
// evaluates none of them twice and finishes the pending actions.
func (e *Engine) HandleEvents(ctx context.Context, events []*eventv1.Event) error {
	return e.flush(ctx, e.evaluateEvents(events))
}

// HandleAnomalies is HandleEvents for the detector's anomalies (a
// detect.Output's Write).
func (e *Engine) HandleAnomalies(ctx context.Context, as []*detectv1.Anomaly) error {
	return e.flush(ctx, e.evaluateAnomalies(as))
}

// evaluateEvents updates the rules' state with events, in order, and
// returns the firings with their actions. An event whose id was seen
// recently is skipped.
func (e *Engine) evaluateEvents(events []*eventv1.Event) []*pending {
	s := e.set.Load()
	var out []*pending
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.evaluated
	for _, ev := range events {
		if id := ev.GetEventId(); id != "" && !e.seen.add("e\x00"+id) {
			e.m.duplicates.Inc()
			continue
		}
		var t int64 = -1
		s.eventCandidates(ev.GetAppId(), TypeName(ev), func(r *rule) {
			e.evaluated++
			if !r.matchEvent(ev, e.buf) {
				return
			}
			if t == -1 {
				t = detect.EventTime(ev)
			}
			if p := e.observe(r, ev.GetAppId(), ev.GetDeviceId(), t, subjectID(ev.GetEventId(), ev)); p != nil {
				p.f.Subject = &adminv1.RuleFiring_Event{Event: ev}
				out = append(out, p)
			}
		})
	}
	e.m.evaluations.Add(float64(e.evaluated - n))
	return out
}

// evaluateAnomalies is evaluateEvents for anomalies; an anomaly's time is
// the end of its window.
func (e *Engine) evaluateAnomalies(as []*detectv1.Anomaly) []*pending {
	s := e.set.Load()
	var out []*pending
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.evaluated
	for _, a := range as {
		if id := a.GetId(); id != "" && !e.seen.add("a\x00"+id) {
			e.m.duplicates.Inc()
			continue
		}
		s.anomalyCandidates(a.GetAppId(), func(r *rule) {
			e.evaluated++
			if !r.matchAnomaly(a) {
				return
			}
			if p := e.observe(r, a.GetAppId(), a.GetDeviceId(), a.GetWindowEndMs(), subjectID(a.GetId(), a)); p != nil {
				p.f.Subject = &adminv1.RuleFiring_Anomaly{Anomaly: a}
				out = append(out, p)
			}
		})
	}
	e.m.evaluations.Add(float64(e.evaluated - n))
	return out
}

// observe counts a match of r and returns the firing, if it fires; e.mu is
// held.
func (e *Engine) observe(r *rule, app, device string, t int64, subject string) *pending {
	e.m.matches.WithLabelValues(r.id).Inc()
	st := e.states[r.id]
	if st == nil && r.stateful() {
		st = newRuleState()
		e.states[r.id] = st
	}
	fire, matches, refused := st.observe(r, stateKey(r, app, device), t, e.cfg.MaxKeys)
	if refused {
		e.m.refused.WithLabelValues(r.id).Inc()
	}
	if !fire {
		return nil
	}
	e.m.firings.WithLabelValues(r.id).Inc()
	return &pending{
		f: &adminv1.RuleFiring{
			Id: firingID(r.id, subject, t), RuleId: r.id, RuleName: r.src.GetName(), AppId: app,
			DeviceId: device, TimeMs: t, Matches: int32(matches),
		},
		actions: r.actions, done: map[int]bool{},
	}
}

// subjectID names an event or anomaly: its id, or a hash of its bytes.
func subjectID(id string, m proto.Message) string {
	if id != "" {
		return id
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// firingID is a UUIDv7: 48 bits of the subject's event time in ms, then
// bits of SHA-256(rule id, subject id). Like anomaly ids it is derived from
// what it is about, so evaluating the same event again (after a restart)
// gives the same id, which webhook receivers dedup on.
func firingID(rule, subject string, t int64) string {
	h := sha256.Sum256([]byte("causality.rules.v1\x00" + rule + "\x00" + subject))
	var u [16]byte
	ms := uint64(max(t, 0))
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	copy(u[6:], h[:10])
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // variant 10
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

// flush carries out the actions of ps and of the firings left pending by
// an earlier call that failed: each firing to the firings topic, to its
// Kafka topics (synchronously: an error is returned and the rest stays
// pending), to its webhooks (in the background, bounded by MaxInflight).
func (e *Engine) flush(ctx context.Context, ps []*pending) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	e.pending = append(e.pending, ps...)
	if len(e.pending) == 0 {
		return nil
	}
	var recs []kafka.Record
	for _, p := range e.pending {
		if !p.recorded {
			recs = append(recs, record(p.f))
		}
	}
	if err := e.out.Firings.Write(ctx, recs); err != nil {
		e.m.firingWriteErrors.Inc()
		return fmt.Errorf("rule firings: %w", err)
	}
	for _, p := range e.pending {
		p.recorded = true
	}
	// Kafka actions, a batch per topic.
	byTopic := map[string][]*pending{}
	var order []string
	for _, p := range e.pending {
		for i, a := range p.actions {
			if t := a.GetKafkaTopic(); t != "" && !p.done[i] {
				if byTopic[t] == nil {
					order = append(order, t)
				}
				byTopic[t] = append(byTopic[t], p)
			}
		}
	}
	var errs []error
	for _, t := range order {
		ps := byTopic[t]
		recs := make([]kafka.Record, len(ps))
		for i, p := range ps {
			recs[i] = record(p.f)
		}
		err := e.writeTopic(ctx, t, recs)
		result := "ok"
		if err != nil {
			result = "error"
			errs = append(errs, err)
		}
		for _, p := range ps {
			e.m.actions.WithLabelValues(p.f.GetRuleId(), "kafka", result).Inc()
			if err == nil {
				for i, a := range p.actions {
					if a.GetKafkaTopic() == t {
						p.done[i] = true
					}
				}
			}
		}
	}
	// Webhooks, in the background.
	hooks := *e.hooks.Load()
	left := e.pending[:0]
	for _, p := range e.pending {
		for i, a := range p.actions {
			id := a.GetWebhookId()
			if id == "" || p.done[i] {
				continue
			}
			if h := hooks[id]; h != nil {
				if err := e.deliver(ctx, h, p.f); err != nil {
					errs = append(errs, err)
					continue
				}
			} else {
				// Removed from the set since the firing: nowhere to send it.
				e.m.actions.WithLabelValues(p.f.GetRuleId(), "webhook", "error").Inc()
				e.logger.Warn("rule firing for a webhook that no longer exists", "rule", p.f.GetRuleId(), "webhook", id, "firing", p.f.GetId())
			}
			p.done[i] = true
		}
		if len(p.done) < len(p.actions) {
			left = append(left, p)
		}
	}
	clear(e.pending[len(left):])
	e.pending = left
	return errors.Join(errs...)
}

func (e *Engine) writeTopic(ctx context.Context, topic string, recs []kafka.Record) error {
	w := e.topics[topic]
	if w == nil {
		var err error
		if w, err = e.out.Topic(ctx, topic); err != nil {
			return fmt.Errorf("rule action topic %s: %w", topic, err)
		}
		e.topics[topic] = w
	}
	return w.Write(ctx, recs)
}

// deliver starts a webhook delivery, waiting while MaxInflight are under
// way.
func (e *Engine) deliver(ctx context.Context, h *hook, f *adminv1.RuleFiring) error {
	body, err := WebhookBody(f)
	if err != nil {
		return err
	}
	select {
	case e.inflight <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.m.webhooksInflight.Inc()
	e.wg.Add(1)
	go func() {
		defer func() {
			<-e.inflight
			e.m.webhooksInflight.Dec()
			e.wg.Done()
		}()
		result := "ok"
		if err := h.d.Deliver(e.hookCtx, f.GetId(), body); err != nil {
			result = "error"
			e.logger.Warn("rule webhook not delivered", "rule", f.GetRuleId(), "webhook", h.w.GetId(), "firing", f.GetId(), "err", err)
		}
		e.m.actions.WithLabelValues(f.GetRuleId(), "webhook", result).Inc()
	}()
	return nil
}

// record is a firing as a Kafka message: key = app id (one app's firings
// stay in order), value = the RuleFiring protobuf.
func record(f *adminv1.RuleFiring) kafka.Record {
	b, _ := proto.Marshal(f) // cannot fail for a valid message
	return kafka.Record{Key: []byte(f.GetAppId()), Value: b, Headers: map[string]string{
		kafka.HeaderAppID: f.GetAppId(), "rule_id": f.GetRuleId(), "firing_id": f.GetId(),
	}}
}

// WebhookBody is the JSON POSTed for a firing: its type and the RuleFiring
// in protobuf JSON with the proto field names (like the detector's
// anomalies).
func WebhookBody(f *adminv1.RuleFiring) ([]byte, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("firing %s as JSON: %w", f.GetId(), err)
	}
	return fmt.Appendf(nil, `{"type":"causality.admin.v1.RuleFiring","id":%q,"data":%s}`, f.GetId(), data), nil
}

// idSet remembers the last n ids added.
type idSet struct {
	n     int
	ids   map[string]struct{}
	order []string
	next  int
}

func newIDSet(n int) *idSet { return &idSet{n: n, ids: make(map[string]struct{}, min(n, 4096))} }

// add reports whether id is new, and remembers it.
func (s *idSet) add(id string) bool {
	if _, ok := s.ids[id]; ok {
		return false
	}
	if len(s.order) < s.n {
		s.order = append(s.order, id)
	} else {
		delete(s.ids, s.order[s.next])
		s.order[s.next] = id
		s.next = (s.next + 1) % s.n
	}
	s.ids[id] = struct{}{}
	return true
}
