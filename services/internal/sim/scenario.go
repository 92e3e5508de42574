package sim

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Scenarios for the labelled evaluation (services/internal/eval): a genuine
// fleet of the catalogue's users (fleet.go) on a simulated clock with
// hour-of-day seasonality, plus either a legitimate change or a cohort of
// tampered devices whose label and onset are known by construction.
// A Scenario is a pure function of its config: the same config gives the
// same events in the same order.

// Scenario names. The first three are legitimate: no device is tampered.
const (
	Genuine    = "genuine"    // the fleet alone, its size following the hour of day
	Rollout    = "rollout"    // 30% of devices update to 2.6.0 (2600), which shows a WhatsNew screen after Home
	Spike      = "spike"      // a marketing campaign doubles the devices; each behaves like the others
	Paywall    = "paywall"    // purchase_complete right after add_to_cart: the checkout flow never runs
	Repackaged = "repackaged" // new installs of 2.5.0 build 2507 (never released) without custom (ad/analytics) events
	Bot        = "bot"        // new devices running one fixed script with 2 s ± 20 ms between events
	Replay     = "replay"     // devices re-sending their past events (same sequence numbers) under new ids
	Emulator   = "emulator"   // new Android emulator installs (one model, is_emulator) behaving like users
	Forged     = "forged"     // devices with injected impossible sequences (checkout steps from nowhere, ...)
)

// ScenarioNames lists every scenario, legitimate ones first.
func ScenarioNames() []string {
	return []string{Genuine, Rollout, Spike, Paywall, Repackaged, Bot, Replay, Emulator, Forged}
}

// Legitimate reports whether a scenario has no tampered device.
func Legitimate(name string) bool { return name == Genuine || name == Rollout || name == Spike }

// ScenarioConfig says what to simulate.
type ScenarioConfig struct {
	Name       string
	App        string
	Seed       uint64
	Devices    int           // the genuine fleet at its daily peak (ActiveShare of it is active)
	Start      time.Time     // simulated start
	Duration   time.Duration // simulated length
	ChangeAt   time.Duration // when tampering or the legitimate change starts, after Start
	Prevalence float64       // tampered devices / all devices (0.01)
	GapMean    time.Duration // mean time between a genuine device's events (3 s)
}

// Validate reports the first invalid setting.
func (c *ScenarioConfig) Validate() error {
	known := false
	for _, n := range ScenarioNames() {
		known = known || n == c.Name
	}
	switch {
	case !known:
		return fmt.Errorf("unknown scenario %q (known: %v)", c.Name, ScenarioNames())
	case c.App == "":
		return fmt.Errorf("scenario %s: app is empty", c.Name)
	case c.Devices < 10:
		return fmt.Errorf("scenario %s: %d devices, need at least 10", c.Name, c.Devices)
	case c.Duration <= 0 || c.ChangeAt <= 0 || c.ChangeAt >= c.Duration:
		return fmt.Errorf("scenario %s: need 0 < change-at (%s) < duration (%s)", c.Name, c.ChangeAt, c.Duration)
	case c.Prevalence <= 0 || c.Prevalence >= 0.5:
		return fmt.Errorf("scenario %s: prevalence %g is outside (0, 0.5)", c.Name, c.Prevalence)
	case c.GapMean < 100*time.Millisecond:
		return fmt.Errorf("scenario %s: mean gap %s is below 100ms", c.Name, c.GapMean)
	}
	return nil
}

// Label is the truth about one device of a scenario.
type Label struct {
	Device   string
	Scenario string // the scenario name when tampered, "" when genuine
	Tampered bool
	Onset    int64 // simulated Unix ms of its first tampered event; 0 = never showed it
	Events   int   // events it sent
}

// hourShare is the share of the fleet active at each hour of the day (UTC),
// a typical consumer-app curve: quiet at night, peaks in the evening.
var hourShare = [24]float64{0.25, 0.2, 0.18, 0.18, 0.2, 0.25, 0.35, 0.45, 0.55, 0.6, 0.62, 0.65,
	0.7, 0.68, 0.65, 0.65, 0.7, 0.78, 0.88, 0.97, 1.0, 0.9, 0.65, 0.4}

// ActiveShare is the share of a fleet active at t (interpolated between hours).
func ActiveShare(t time.Time) float64 {
	t = t.UTC()
	h := t.Hour()
	f := float64(t.Minute()*60+t.Second()) / 3600
	return hourShare[h]*(1-f) + hourShare[(h+1)%24]*f
}

type role int

const (
	roleGenuine  role = iota // always in the fleet, subject to seasonality
	roleTampered             // in the fleet from the start, tampered from ChangeAt
	roleLate                 // joins at ChangeAt (new installs: tampered, or the spike's users)
)

type sdev struct {
	i      int // index in the Fleet
	role   role
	next   time.Time
	seq    uint64
	label  *Label
	screen string // last screen_view sent (for inserted flows)
	recent []*eventv1.Event
	bot    int // position in the bot script
	update bool
	ctx    *eventv1.DeviceContext // forced context (repackaged, emulator)
	hidx   int
}

type devQueue []*sdev

func (q devQueue) Len() int { return len(q) }
func (q devQueue) Less(a, b int) bool {
	if !q[a].next.Equal(q[b].next) {
		return q[a].next.Before(q[b].next)
	}
	return q[a].i < q[b].i
}
func (q devQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a]; q[a].hidx, q[b].hidx = a, b }
func (q *devQueue) Push(x any)   { d := x.(*sdev); d.hidx = len(*q); *q = append(*q, d) }
func (q *devQueue) Pop() any     { old := *q; d := old[len(old)-1]; *q = old[:len(old)-1]; return d }
func (q devQueue) peek() *sdev   { return q[0] }
func (q *devQueue) fix(d *sdev)  { heap.Fix(q, d.hidx) }
func (q *devQueue) push(d *sdev) { heap.Push(q, d) }
func (q *devQueue) empty() bool  { return len(*q) == 0 }

// Scenario produces the events of one scenario in simulated time order.
type Scenario struct {
	cfg     ScenarioConfig
	f       *Fleet
	r       *rand.Rand
	q       devQueue
	devs    []*sdev
	genuine int // devices subject to seasonality: indices [0, genuine)
	end     time.Time
	change  time.Time
	out     []Timed
}

// Timed is one event of a scenario, with its device's clock skew (the
// sender stamps sent_at_ms on the same skewed clock) and device index.
type Timed struct {
	Event  *eventv1.Event
	Skew   time.Duration
	Device int
}

// NewScenario builds a scenario.
func NewScenario(cfg ScenarioConfig) (*Scenario, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.Devices
	// Prevalence is of the devices active when tampering starts.
	k := max(1, int(math.Round(cfg.Prevalence*float64(n)*ActiveShare(cfg.Start.Add(cfg.ChangeAt)))))
	late := 0
	switch cfg.Name {
	case Spike:
		late = n
	case Repackaged, Bot, Emulator:
		late = k
	}
	s := &Scenario{
		cfg: cfg, f: NewFleet(cfg.Seed, n+late, cfg.App),
		r:       rand.New(rand.NewPCG(cfg.Seed^0x5ce7a210, cfg.Seed+17)),
		genuine: n, end: cfg.Start.Add(cfg.Duration), change: cfg.Start.Add(cfg.ChangeAt),
	}
	for i := range n + late {
		d := &sdev{i: i, role: roleGenuine, label: &Label{Device: s.f.devices[i].id}}
		switch {
		case i >= n:
			d.role = roleLate
		case i < k && !Legitimate(cfg.Name) && cfg.Name != Repackaged && cfg.Name != Bot && cfg.Name != Emulator:
			d.role = roleTampered // the lowest indices: active at every hour
		}
		if d.role == roleTampered || (d.role == roleLate && cfg.Name != Spike) {
			d.label.Tampered, d.label.Scenario = true, cfg.Name
		}
		if cfg.Name == Rollout && i%10 < 3 {
			d.update = true
		}
		start := cfg.Start
		if d.role == roleLate {
			start = s.change
		}
		d.next = start.Add(s.gap())
		switch {
		case d.role == roleLate && cfg.Name == Repackaged:
			c := proto.Clone(s.f.devices[i].ctx).(*eventv1.DeviceContext)
			c.Platform, c.DeviceModel, c.Manufacturer, c.OsVersion = eventv1.Platform_PLATFORM_ANDROID, "SM-A546B", "samsung", "14"
			c.AppVersion, c.BuildNumber = "2.5.0", "2507"
			d.ctx = c
		case d.role == roleLate && cfg.Name == Emulator:
			c := proto.Clone(s.f.devices[i].ctx).(*eventv1.DeviceContext)
			c.Platform, c.DeviceModel, c.Manufacturer, c.OsVersion = eventv1.Platform_PLATFORM_ANDROID, "sdk_gphone64_x86_64", "Google", "14"
			c.AppVersion, c.BuildNumber, c.IsEmulator, c.IsJailbroken, c.Carrier = "2.5.0", "2500", true, false, ""
			d.ctx = c
		}
		if d.ctx != nil {
			s.f.devices[i].ctx = d.ctx
		}
		s.devs = append(s.devs, d)
		s.q.push(d)
	}
	return s, nil
}

// Config returns the scenario's config.
func (s *Scenario) Config() ScenarioConfig { return s.cfg }

// gap is a genuine device's time to its next event: exponential.
func (s *Scenario) gap() time.Duration {
	return time.Duration(s.r.ExpFloat64() * float64(s.cfg.GapMean))
}

// Next returns the next event, or false at the end of the scenario.
func (s *Scenario) Next() (Timed, bool) {
	for len(s.out) == 0 {
		if s.q.empty() {
			return Timed{}, false
		}
		d := s.q.peek()
		if !d.next.Before(s.end) {
			return Timed{}, false
		}
		s.step(d)
		s.q.fix(d)
	}
	t := s.out[0]
	s.out = s.out[1:]
	return t, true
}

// Labels returns the truth about every device that sent at least one
// event so far (all of them once Next returned false).
func (s *Scenario) Labels() []Label {
	var out []Label
	for _, d := range s.devs {
		if d.label.Events > 0 {
			out = append(out, *d.label)
		}
	}
	return out
}

// step makes device d's next events at d.next and schedules it again.
func (s *Scenario) step(d *sdev) {
	now := d.next
	if d.role == roleGenuine && float64(d.i) >= ActiveShare(now)*float64(s.genuine) {
		d.next = now.Add(30 * time.Second) // offline at this hour
		return
	}
	if s.cfg.Name == Bot && d.role == roleLate {
		s.botStep(d, now)
		d.next = now.Add(2*time.Second + time.Duration(s.r.IntN(41)-20)*time.Millisecond)
		return
	}
	fd := s.f.devices[d.i]
	if d.update && !now.Before(s.change) && fd.phase != active && len(fd.queue) == 0 && fd.ctx.GetAppVersion() != "2.6.0" {
		c := proto.Clone(fd.ctx).(*eventv1.DeviceContext)
		c.AppVersion, c.BuildNumber = "2.6.0", "2600"
		fd.ctx = c // the update is installed while the app is in the background
	}
	e := s.f.NextOf(d.i, now)
	if d.ctx != nil {
		e.DeviceContext = d.ctx
	}
	d.next = now.Add(s.gap())
	tampering := d.label.Tampered && !now.Before(s.change)
	switch {
	case tampering && s.cfg.Name == Paywall:
		switch e.GetPayload().(type) {
		case *eventv1.Event_CheckoutStart, *eventv1.Event_CheckoutStep, *eventv1.Event_PurchaseComplete, *eventv1.Event_PurchaseFailed:
			return // the patched build skips the checkout
		}
		s.emit(d, e, false)
		if atc := e.GetAddToCart(); atc != nil {
			p := &eventv1.PurchaseComplete{OrderId: "ord-" + s.f.uuid(4, now)[:13], CartId: atc.GetCartId(), ItemCount: atc.GetQuantity(),
				TotalCents: int64(atc.GetQuantity()) * atc.GetPriceCents(), Currency: "USD", PaymentMethod: "card"}
			s.emit(d, s.derived(e, 400*time.Millisecond, &eventv1.Event_PurchaseComplete{PurchaseComplete: p}), true)
		}
	case d.label.Tampered && s.cfg.Name == Repackaged:
		if e.GetCustomEvent() != nil {
			return // ad and analytics calls stripped
		}
		s.emit(d, e, true)
	case tampering && s.cfg.Name == Replay:
		s.emit(d, e, false)
		if len(d.recent) > 5 && s.r.IntN(3) == 0 {
			old := proto.Clone(d.recent[s.r.IntN(len(d.recent))]).(*eventv1.Event)
			old.EventId = s.f.uuid(7, time.UnixMilli(old.GetTimestampMs()))
			s.onset(d, now)
			s.push(d, old, false) // same sequence number and timestamp
		}
	case tampering && s.cfg.Name == Forged && s.r.IntN(8) == 0:
		s.emit(d, e, false)
		for j, p := range s.forgery(d) {
			s.emit(d, s.derived(e, time.Duration(j+1)*300*time.Millisecond, p), j == 0)
		}
	default:
		s.emit(d, e, d.label.Tampered && d.role == roleLate) // new tampered installs: from their first event
		if d.update && e.GetDeviceContext().GetAppVersion() == "2.6.0" && e.GetScreenView().GetScreenName() == "Home" && s.r.IntN(10) < 3 {
			// The new version's flow: a WhatsNew screen after Home, dismissed.
			steps := []any{
				&eventv1.Event_ScreenExit{ScreenExit: &eventv1.ScreenExit{ScreenName: "Home", DurationMs: 900, NextScreen: "WhatsNew"}},
				&eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "WhatsNew", ScreenClass: "WhatsNew", PreviousScreen: "Home"}},
				&eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "dismiss", ButtonText: "Dismiss", ScreenName: "WhatsNew"}},
				&eventv1.Event_ScreenExit{ScreenExit: &eventv1.ScreenExit{ScreenName: "WhatsNew", DurationMs: 2500, NextScreen: "Home"}},
				&eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home", ScreenClass: "Home", PreviousScreen: "WhatsNew"}},
			}
			for j, p := range steps {
				s.emit(d, s.derived(e, time.Duration(j+1)*400*time.Millisecond, p), false)
			}
			d.next = d.next.Add(2 * time.Second)
		}
	}
}

// forgery is one of the impossible sequences a tool injects.
func (s *Scenario) forgery(d *sdev) []any {
	switch s.r.IntN(3) {
	case 0: // a checkout step out of nowhere, then the order confirmation
		return []any{
			&eventv1.Event_CheckoutStep{CheckoutStep: &eventv1.CheckoutStep{StepNumber: 3, StepName: "payment"}},
			&eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "OrderConfirmation", PreviousScreen: d.screen}},
		}
	case 1: // straight into the checkout at step 2, paying at once
		return []any{
			&eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Checkout", PreviousScreen: d.screen}},
			&eventv1.Event_CheckoutStep{CheckoutStep: &eventv1.CheckoutStep{StepNumber: 2, StepName: "delivery_method"}},
			&eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "pay_now", ScreenName: "Checkout"}},
		}
	default: // an add to cart on a screen without products, a login without a login screen
		return []any{
			&eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Notifications", PreviousScreen: d.screen}},
			&eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{ProductId: "sku-1001", Quantity: 5, PriceCents: 1, Currency: "USD"}},
			&eventv1.Event_UserLogin{UserLogin: &eventv1.UserLogin{UserId: "user-admin", Method: "token"}},
		}
	}
}

// botScript is what every automation bot does, in a loop.
var botScript = []func(d *sdev) any{
	func(d *sdev) any {
		return &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{IsColdStart: true, LaunchDurationMs: 800, LaunchSource: "icon"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "search_bar", ScreenName: "Home"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Search", PreviousScreen: "Home"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_TextInput{TextInput: &eventv1.TextInput{FieldId: "search_query", FieldType: "search", ScreenName: "Search", TextLength: 8}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "SearchResults", PreviousScreen: "Search"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{ScreenName: "SearchResults", ScrollDepthPercent: 40, Direction: "down"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "ProductDetail", PreviousScreen: "SearchResults"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ProductView{ProductView: &eventv1.ProductView{ProductId: "sku-1012", ProductName: "Sunglasses", Category: "accessories", PriceCents: 12000, Currency: "USD", Source: "search"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "wishlist", ScreenName: "ProductDetail"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Wishlist", PreviousScreen: "ProductDetail"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home", PreviousScreen: "Wishlist"}}
	},
	func(d *sdev) any {
		return &eventv1.Event_AppBackground{AppBackground: &eventv1.AppBackground{ForegroundDurationMs: 24000, CurrentScreen: "Home"}}
	},
}

// botStep emits the bot's next scripted event.
func (s *Scenario) botStep(d *sdev, now time.Time) {
	fd := s.f.devices[d.i]
	k := d.bot % len(botScript)
	if k == 0 {
		fd.session = s.f.uuid(7, now)
	}
	d.bot++
	e := &eventv1.Event{
		EventId: s.f.uuid(7, now.Add(fd.skew)), AppId: s.cfg.App, DeviceId: fd.id, InstallId: fd.install,
		TimestampMs: now.Add(fd.skew).UnixMilli(), DeviceContext: fd.ctx, SessionId: fd.session, Properties: fd.props,
	}
	setPayload(e, botScript[k](d))
	s.emit(d, e, true)
}

// onset records the true time of the device's first tampered event.
func (s *Scenario) onset(d *sdev, t time.Time) {
	if d.label.Onset == 0 {
		d.label.Onset = t.UnixMilli()
	}
}

// derived is a new event of e's device after e, with payload p.
func (s *Scenario) derived(e *eventv1.Event, after time.Duration, p any) *eventv1.Event {
	t := time.UnixMilli(e.GetTimestampMs()).Add(after)
	x := &eventv1.Event{
		EventId: s.f.uuid(7, t), AppId: e.GetAppId(), DeviceId: e.GetDeviceId(), InstallId: e.GetInstallId(),
		SessionId: e.GetSessionId(), UserId: e.GetUserId(), TimestampMs: t.UnixMilli(), DeviceContext: e.GetDeviceContext(),
		Properties: e.GetProperties(), CorrelationId: e.GetCorrelationId(),
	}
	setPayload(x, p)
	return x
}

func setPayload(e *eventv1.Event, p any) {
	switch p := p.(type) {
	case *eventv1.Event_AppStart:
		e.Payload = p
	case *eventv1.Event_AppBackground:
		e.Payload = p
	case *eventv1.Event_ScreenView:
		if p.ScreenView.GetScreenClass() == "" {
			p.ScreenView.ScreenClass = p.ScreenView.GetScreenName()
		}
		e.Payload = p
	case *eventv1.Event_ScreenExit:
		e.Payload = p
	case *eventv1.Event_ButtonTap:
		e.Payload = p
	case *eventv1.Event_TextInput:
		e.Payload = p
	case *eventv1.Event_ScrollEvent:
		e.Payload = p
	case *eventv1.Event_ProductView:
		e.Payload = p
	case *eventv1.Event_AddToCart:
		e.Payload = p
	case *eventv1.Event_CheckoutStep:
		e.Payload = p
	case *eventv1.Event_PurchaseComplete:
		e.Payload = p
	case *eventv1.Event_UserLogin:
		e.Payload = p
	default:
		panic(fmt.Sprintf("sim: setPayload: unhandled %T", p))
	}
}

// emit numbers e as the device's next event and queues it; tampered marks
// the device's onset.
func (s *Scenario) emit(d *sdev, e *eventv1.Event, tampered bool) {
	d.seq++
	e.Sequence = d.seq
	if sv := e.GetScreenView(); sv != nil {
		d.screen = sv.GetScreenName()
	}
	if s.cfg.Name == Replay {
		d.recent = append(d.recent, e)
		if len(d.recent) > 20 {
			d.recent = d.recent[1:]
		}
	}
	s.push(d, e, tampered)
}

// push queues e as it is.
func (s *Scenario) push(d *sdev, e *eventv1.Event, tampered bool) {
	if tampered {
		s.onset(d, time.UnixMilli(e.GetTimestampMs()).Add(-s.f.devices[d.i].skew))
	}
	d.label.Events++
	s.out = append(s.out, Timed{Event: e, Skew: s.f.devices[d.i].skew, Device: d.i})
}
