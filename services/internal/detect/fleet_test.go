package detect

import (
	"container/heap"
	"fmt"
	"math/rand/v2"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// A small synthetic fleet for the detector tests: genuine users with random
// flows and random timing, and tampered clients whose label is known by
// construction. It is deterministic for a seed.

type behaviour int

const (
	genuine  behaviour = iota
	bot                // fixed script, regular timing
	paywall            // purchase_complete without checkout
	forger             // impossible transitions
	replayer           // re-sends past events under new ids
)

type fdev struct {
	id, install, session string
	seq                  uint64
	ctx                  *eventv1.DeviceContext
	next                 int64
	kind                 behaviour
	queue                []func(e *eventv1.Event)
	screen               string
	cart                 bool
	sent                 []*eventv1.Event
	newFlow              bool // the legit new version: a "WhatsNew" screen after Home
	stripCustom          bool // a repackaged build without analytics events
	botStep              int
	index                int
	firstBad             int64   // event time of its first tampered event (0 = none yet)
	active               []int64 // starts of the minutes it sent events in, ascending
}

type fleet struct {
	r    *rand.Rand
	app  string
	devs []*fdev
	h    devHeap
	ids  int
}

func newFleet(seed uint64) *fleet {
	return &fleet{r: rand.New(rand.NewPCG(seed, seed*7+1)), app: "shop"}
}

// t0 is a Monday at 00:00 UTC.
const t0 = int64(1_767_571_200_000)

func androidCtx() *eventv1.DeviceContext {
	return &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "2.4.1", BuildNumber: "2410", DeviceModel: "SM-S911B", Manufacturer: "samsung", OsVersion: "14"}
}

func iosCtx() *eventv1.DeviceContext {
	return &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_IOS, AppVersion: "2.4.1", BuildNumber: "2410", DeviceModel: "iPhone15,2", Manufacturer: "Apple", OsVersion: "18.3"}
}

// add starts n devices of a behaviour at time start; ctx gives each one its
// context (a fresh value per device).
func (f *fleet) add(n int, start int64, kind behaviour, ctx func(i int) *eventv1.DeviceContext) []*fdev {
	var out []*fdev
	for i := range n {
		f.ids++
		d := &fdev{id: fmt.Sprintf("dev-%04d", f.ids), install: fmt.Sprintf("inst-%04d", f.ids), ctx: ctx(i), kind: kind, next: start + f.r.Int64N(3000)}
		f.devs = append(f.devs, d)
		heap.Push(&f.h, d)
		out = append(out, d)
	}
	return out
}

// genuineMix is half Android, half iOS.
func genuineMix(i int) *eventv1.DeviceContext {
	if i%2 == 0 {
		return androidCtx()
	}
	return iosCtx()
}

// until emits every event before end, in time order.
func (f *fleet) until(end int64, emit func(*eventv1.Event)) {
	for f.h.Len() > 0 && f.h[0].next < end {
		d := f.h[0]
		e := f.event(d)
		emit(e)
		if d.kind == replayer && len(d.sent) > 5 && f.r.IntN(3) == 0 {
			old := proto.Clone(d.sent[f.r.IntN(len(d.sent))]).(*eventv1.Event)
			f.ids++
			old.EventId = fmt.Sprintf("replay-%d", f.ids)
			d.bad(e.GetTimestampMs())
			emit(old)
		}
		heap.Fix(&f.h, 0)
	}
}

func (f *fleet) event(d *fdev) *eventv1.Event {
	if len(d.queue) == 0 {
		f.plan(d)
	}
	step := d.queue[0]
	d.queue = d.queue[1:]
	d.seq++
	e := &eventv1.Event{
		EventId: fmt.Sprintf("%s-%d-%s", d.id, d.seq, d.install), AppId: f.app, DeviceId: d.id, InstallId: d.install,
		TimestampMs: d.next, Sequence: d.seq, DeviceContext: d.ctx,
	}
	e.SessionId = d.session
	step(e)
	if m := WindowOf(e.TimestampMs, 60_000).Start; len(d.active) == 0 || d.active[len(d.active)-1] != m {
		d.active = append(d.active, m)
	}
	if d.kind != replayer && d.kind != forger && d.kind != paywall {
		d.bad(e.GetTimestampMs()) // tampered from its first event (a genuine device never is)
	}
	if d.kind == replayer {
		d.sent = append(d.sent, e)
		if len(d.sent) > 20 {
			d.sent = d.sent[1:]
		}
	}
	// Timing: people are irregular, bots are not.
	switch {
	case d.kind == bot:
		d.next += 1500 + f.r.Int64N(40) - 20
	case d.session == "":
		d.next += 60_000 + f.r.Int64N(240_000) // in the background until the next launch
	default:
		d.next += 100 + int64(f.r.ExpFloat64()*2500)
	}
	return e
}

var browse = []string{"Home", "Search", "Category", "Profile", "Wishlist", "Notifications"}

func (f *fleet) view(name string) func(e *eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: name}}
	}
}

// bad records when the device first did something tampered.
func (d *fdev) bad(t int64) {
	if d.firstBad == 0 {
		d.firstBad = t
	}
}

func (d *fdev) add(steps ...func(e *eventv1.Event)) { d.queue = append(d.queue, steps...) }

func tap(id string) func(e *eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: id}}
	}
}

func payload(p func() any) func(e *eventv1.Event) {
	return func(e *eventv1.Event) {
		switch x := p().(type) {
		case *eventv1.Event_AppStart:
			e.Payload = x
		case *eventv1.Event_ScrollEvent:
			e.Payload = x
		case *eventv1.Event_ProductView:
			e.Payload = x
		case *eventv1.Event_AddToCart:
			e.Payload = x
		case *eventv1.Event_CheckoutStart:
			e.Payload = x
		case *eventv1.Event_CheckoutStep:
			e.Payload = x
		case *eventv1.Event_PurchaseComplete:
			e.Payload = x
		case *eventv1.Event_CustomEvent:
			e.Payload = x
		case *eventv1.Event_AppBackground:
			e.Payload = x
		case *eventv1.Event_TextInput:
			e.Payload = x
		}
	}
}

func appStart() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{IsColdStart: true}} })
}

func scroll() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{}} })
}

func productView() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_ProductView{ProductView: &eventv1.ProductView{ProductId: "sku-1"}} })
}

func addToCart() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{ProductId: "sku-1"}} })
}

func checkoutStart() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_CheckoutStart{CheckoutStart: &eventv1.CheckoutStart{}} })
}

func checkoutStep(n int32) func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_CheckoutStep{CheckoutStep: &eventv1.CheckoutStep{StepNumber: n}} })
}

func purchase() func(e *eventv1.Event) {
	return payload(func() any {
		return &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o"}}
	})
}

func custom() func(e *eventv1.Event) {
	return payload(func() any {
		return &eventv1.Event_CustomEvent{CustomEvent: &eventv1.CustomEvent{EventName: "promo_banner_shown"}}
	})
}

func input() func(e *eventv1.Event) {
	return payload(func() any { return &eventv1.Event_TextInput{TextInput: &eventv1.TextInput{FieldId: "q"}} })
}

// botScript is what every automation bot does, in a loop.
func (f *fleet) botScript() []func(e *eventv1.Event) {
	return []func(e *eventv1.Event){
		appStart(), f.view("Home"), tap("search_bar"), f.view("Search"), input(), f.view("Category"), scroll(), scroll(),
		f.view("ProductDetail"), productView(), addToCart(), f.view("Wishlist"), tap("product_card"), f.view("Profile"),
		tap("settings"), f.view("Home"), custom(),
	}
}

// plan queues the device's next action.
func (f *fleet) plan(d *fdev) {
	if d.kind == bot {
		s := f.botScript()
		d.add(s[d.botStep%len(s)])
		if d.botStep%len(s) == 0 {
			d.session = fmt.Sprintf("%s-s%d", d.id, d.botStep)
		}
		d.botStep++
		return
	}
	if d.session == "" {
		d.session = fmt.Sprintf("%s-s%d", d.id, d.seq)
		d.add(appStart(), f.viewTo(d, "Home"))
		return
	}
	if d.kind == forger && f.r.IntN(5) == 0 {
		// Impossible sequences, made by a tool that injects events.
		mark := func(e *eventv1.Event) { d.bad(e.GetTimestampMs()) }
		switch f.r.IntN(3) {
		case 0: // a checkout step out of nowhere, an order confirmation from Home
			d.add(func(e *eventv1.Event) { mark(e); checkoutStep(3)(e) }, f.viewTo(d, "Home"), f.viewTo(d, "OrderConfirmation"))
		case 1: // straight into the checkout, step 2 without a start
			d.add(func(e *eventv1.Event) { mark(e); f.viewTo(d, "Checkout")(e) }, checkoutStep(2), tap("pay_now"))
		default: // an add to cart from a screen without products, then the cart
			d.add(func(e *eventv1.Event) { mark(e); f.viewTo(d, "Notifications")(e) }, addToCart(), f.viewTo(d, "Cart"), scroll())
		}
		return
	}
	n := f.r.IntN(100)
	switch {
	case n < 30:
		d.add(f.viewTo(d, browse[f.r.IntN(len(browse))]))
	case n < 50:
		d.add(tap("button"))
	case n < 65:
		d.add(scroll())
	case n < 77:
		d.add(f.viewTo(d, "ProductDetail"), productView())
		if d.kind == paywall {
			d.add(func(e *eventv1.Event) { d.bad(e.GetTimestampMs()); purchase()(e) }, f.viewTo(d, "OrderConfirmation")) // unlocked without paying
		} else if f.r.IntN(10) < 4 {
			d.add(addToCart())
			d.cart = true
		}
	case n < 87 && d.cart:
		d.add(f.viewTo(d, "Cart"), tap("checkout"), f.viewTo(d, "Checkout"), checkoutStart(), input(), checkoutStep(1), checkoutStep(2), checkoutStep(3), purchase(), f.viewTo(d, "OrderConfirmation"))
		d.cart = false
	case n < 94:
		if !d.stripCustom {
			d.add(custom())
		} else {
			d.add(scroll())
		}
	case n < 97:
		d.add(func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppBackground{AppBackground: &eventv1.AppBackground{}}
			d.session = "" // the next event is a launch after a long gap
		})
	default:
		d.add(tap("other"))
	}
}

// viewTo is a screen view that tracks the device's screen and, for the
// legit new version, sometimes shows the new WhatsNew screen after Home.
func (f *fleet) viewTo(d *fdev, name string) func(e *eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: name, PreviousScreen: d.screen}}
		d.screen = name
		if name == "Home" && d.newFlow && f.r.IntN(10) < 4 {
			d.queue = append([]func(*eventv1.Event){f.viewTo(d, "WhatsNew"), tap("dismiss")}, d.queue...)
		}
	}
}

// devHeap orders devices by their next event time.
type devHeap []*fdev

func (h devHeap) Len() int { return len(h) }
func (h devHeap) Less(i, j int) bool {
	if h[i].next != h[j].next {
		return h[i].next < h[j].next
	}
	return h[i].id < h[j].id
}
func (h devHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index, h[j].index = i, j }
func (h *devHeap) Push(x any)   { d := x.(*fdev); d.index = len(*h); *h = append(*h, d) }
func (h *devHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	return d
}
