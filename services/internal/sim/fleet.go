package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Fleet is a set of simulated app installs. Next picks a device and returns
// the next event of its current flow. A Fleet is a pure function of its seed
// and of the times passed to Next: the same seed and the same times give the
// same events, ids included (ids are UUIDv7 built from the device clock and
// the seeded generator). It is not safe for concurrent use.
type Fleet struct {
	app     string
	r       *rand.Rand
	devices []*device
}

// NewFleet returns n devices of app, generated from seed.
func NewFleet(seed uint64, n int, app string) *Fleet {
	f := &Fleet{app: app, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for i := range n {
		f.devices = append(f.devices, f.newDevice(i))
	}
	return f
}

// Len is the number of devices.
func (f *Fleet) Len() int { return len(f.devices) }

// Skew is how far device i's clock is from the true time; its events'
// timestamp_ms (and sent_at_ms, set by whoever sends them) use that clock.
func (f *Fleet) Skew(i int) time.Duration { return f.devices[i].skew }

// Next returns the next event of a device chosen at random, at true time
// now, and that device's index.
func (f *Fleet) Next(now time.Time) (*eventv1.Event, int) {
	i := f.r.IntN(len(f.devices))
	return f.NextOf(i, now), i
}

// NextOf returns the next event of device i at true time now.
func (f *Fleet) NextOf(i int, now time.Time) *eventv1.Event {
	d := f.devices[i]
	if len(d.queue) == 0 {
		f.plan(d)
	}
	s := d.queue[0]
	d.queue = d.queue[1:]
	t := now.Add(d.skew)
	d.seq++
	e := &eventv1.Event{
		EventId:       f.uuid(7, t),
		AppId:         f.app,
		DeviceId:      d.id,
		InstallId:     d.install,
		TimestampMs:   t.UnixMilli(),
		Sequence:      d.seq,
		DeviceContext: d.ctx,
		Properties:    d.props,
	}
	s(d, t, e) // sets the payload and may change the session, user or context
	e.SessionId = d.session
	if e.UserId == "" { // a logout sets the user it ends
		e.UserId = d.user
	}
	return e
}

// step fills one event's payload at device time t and updates the device.
type step func(d *device, t time.Time, e *eventv1.Event)

type phase int

const (
	closed     phase = iota // app not running: the next flow is a launch
	active                  // in the foreground
	background              // in the background
)

type cartItem struct {
	p   product
	qty int32
}

// device is one install and where it is in its flows.
type device struct {
	id, install string
	ctx         *eventv1.DeviceContext // replaced, never changed: events share it
	props       map[string]string      // same: shared, never changed
	skew        time.Duration
	seq         uint64
	queue       []step

	phase      phase
	launches   int
	session    string
	user       string // signed-in user, "" when anonymous
	account    string // the user id this install signed up or logged in with
	screen     string // current screen, "" between an exit and the next view
	prevScreen string
	screenAt   time.Time
	fgAt       time.Time
	bgAt       time.Time
	cartID     string
	cart       []cartItem
	crash      *eventv1.AppCrash // reported at the next launch
	battery    float32
}

func (f *Fleet) newDevice(i int) *device {
	r := f.r
	m := models[r.IntN(len(models))]
	w := 0
	for _, v := range appVersions {
		w += v.weight
	}
	pick := r.IntN(w)
	v := appVersions[0]
	for _, av := range appVersions {
		if pick < av.weight {
			v = av
			break
		}
		pick -= av.weight
	}
	place := places[r.IntN(len(places))]
	ctx := &eventv1.DeviceContext{
		Platform:     m.platform,
		OsVersion:    m.osVersions[r.IntN(len(m.osVersions))],
		AppVersion:   v.version,
		BuildNumber:  v.build,
		DeviceModel:  m.name,
		Manufacturer: m.maker,
		ScreenWidth:  m.width,
		ScreenHeight: m.height,
		Locale:       place.locale,
		Timezone:     place.zone,
		NetworkType:  networks[r.IntN(len(networks)-1)], // not offline at install
		IsJailbroken: m.platform != eventv1.Platform_PLATFORM_WEB && r.IntN(100) == 0,
		IsEmulator:   m.platform == eventv1.Platform_PLATFORM_ANDROID && r.IntN(200) == 0,
		SdkVersion:   "0.1.0",
	}
	if m.platform != eventv1.Platform_PLATFORM_WEB && ctx.NetworkType != eventv1.NetworkType_NETWORK_TYPE_WIFI {
		ctx.Carrier = carriers[r.IntN(len(carriers))]
	}
	// Most clocks are close; a few are minutes off, a very few hours off.
	var skew time.Duration
	switch p := r.IntN(100); {
	case p < 90:
		skew = time.Duration(r.IntN(4000)-2000) * time.Millisecond
	case p < 98:
		skew = time.Duration(r.IntN(240)-120) * time.Second
	default:
		skew = time.Duration(r.IntN(12)-6)*time.Hour + time.Duration(r.IntN(3600))*time.Second
	}
	variant := "control"
	if r.IntN(2) == 0 {
		variant = "treatment"
	}
	d := &device{
		id:      fmt.Sprintf("sim-%08x-%05d", r.Uint32(), i),
		install: f.uuid(4, time.Time{}),
		ctx:     ctx,
		props:   map[string]string{"exp.checkout_v2": variant},
		skew:    skew,
		battery: 0.3 + 0.7*r.Float32(),
	}
	if r.IntN(4) == 0 { // a returning user who is already signed in
		d.account = "user-" + f.uuid(4, time.Time{})[:8]
		d.user = d.account
	}
	return d
}

// uuid returns a UUID of version 7 (time-ordered, from t) or 4 from the
// seeded generator.
func (f *Fleet) uuid(version byte, t time.Time) string {
	var u uuid.UUID
	a, b := f.r.Uint64(), f.r.Uint64()
	for i := range 8 {
		u[i], u[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	if version == 7 {
		ms := uint64(t.UnixMilli())
		for i := range 6 {
			u[i] = byte(ms >> (40 - 8*i))
		}
	}
	u[6] = u[6]&0x0f | version<<4
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// chance is true with probability p.
func (f *Fleet) chance(p float64) bool { return f.r.Float64() < p }

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// plan appends the steps of the device's next flow to its queue.
func (f *Fleet) plan(d *device) {
	switch d.phase {
	case closed:
		f.launch(d)
	case background:
		f.resume(d)
	default:
		f.act(d)
	}
}

func (d *device) add(steps ...step) { d.queue = append(d.queue, steps...) }

// launch: app_start, the crash of the previous run if any, the home screen.
func (f *Fleet) launch(d *device) {
	cold := d.launches == 0 || f.chance(0.7)
	source := "icon"
	deeplink := ""
	switch p := f.r.IntN(10); {
	case p == 0:
		source = "notification"
	case p == 1:
		source, deeplink = "deeplink", "https://shop.example/p/"+pick(f.r, products).id
	}
	launchMs := int64(150 + f.r.IntN(600))
	if cold {
		launchMs += int64(400 + f.r.IntN(1500))
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		d.launches++
		d.phase, d.session, d.fgAt, d.screen, d.prevScreen = active, f.uuid(7, t), t, "", ""
		e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{
			IsColdStart: cold, LaunchDurationMs: launchMs, LaunchSource: source, DeeplinkUrl: deeplink,
		}}
	})
	if d.crash != nil {
		c := d.crash
		d.crash = nil
		d.add(func(d *device, t time.Time, e *eventv1.Event) { e.Payload = &eventv1.Event_AppCrash{AppCrash: c} })
	}
	d.add(f.view("Home", nil))
	if deeplink != "" {
		f.browseProduct(d, "deeplink")
	}
}

// resume: back to the foreground, or the app was killed in the background.
func (f *Fleet) resume(d *device) {
	if f.chance(0.3) {
		d.phase = closed
		f.launch(d)
		return
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		bg := t.Sub(d.bgAt)
		if bg > 30*time.Second { // a new session after 30 s in the background
			d.session = f.uuid(7, t)
		}
		d.phase, d.fgAt, d.screenAt = active, t, t
		e.Payload = &eventv1.Event_AppForeground{AppForeground: &eventv1.AppForeground{
			BackgroundDurationMs: bg.Milliseconds(), ResumeScreen: d.screen,
		}}
	})
}

// act chooses what a user in the foreground does next.
func (f *Fleet) act(d *device) {
	type choice struct {
		weight int
		do     func(*device)
	}
	choices := []choice{
		{25, func(d *device) { d.add(f.view(pick(f.r, browseScreens), nil)) }},
		{20, f.tap},
		{14, f.scroll},
		{4, f.swipe},
		{2, f.longPress},
		{2, f.doubleTap},
		{5, f.typeText},
		{12, func(d *device) { f.browseProduct(d, pick(f.r, productSources)) }},
		{4, f.custom},
		{4, f.goBackground},
		{1, f.networkChange},
		{1, f.permission},
		{1, f.battery},
	}
	if len(d.cart) > 0 {
		choices = append(choices, choice{8, f.checkout}, choice{1, f.removeFromCart})
	}
	if d.user == "" {
		choices = append(choices, choice{3, f.login})
		if d.account == "" {
			choices = append(choices, choice{2, f.signup})
		}
	} else {
		choices = append(choices, choice{1, f.logout}, choice{1, f.updateProfile})
	}
	// Rare events: memory pressure (1 in ~200 actions), crashes (1 in ~1000).
	if f.chance(0.005) {
		d.add(f.memoryWarning())
		return
	}
	if f.chance(0.001) {
		f.crashNow(d)
		return
	}
	total := 0
	for _, c := range choices {
		total += c.weight
	}
	n := f.r.IntN(total)
	for _, c := range choices {
		if n < c.weight {
			c.do(d)
			return
		}
		n -= c.weight
	}
}

// view leaves the current screen (screen_exit) and shows name (screen_view):
// two events, so the step puts the screen_view step back at the front of the
// queue after it emitted the exit. On the same screen it is a re-render: only
// screen_view.
func (f *Fleet) view(name string, params map[string]string) step {
	return func(d *device, t time.Time, e *eventv1.Event) {
		if d.screen != "" && d.screen != name {
			e.Payload = &eventv1.Event_ScreenExit{ScreenExit: &eventv1.ScreenExit{
				ScreenName: d.screen, DurationMs: t.Sub(d.screenAt).Milliseconds(), NextScreen: name,
			}}
			d.prevScreen, d.screen = d.screen, ""
			d.queue = append([]step{f.view(name, params)}, d.queue...)
			return
		}
		class := name + "ViewController"
		switch d.ctx.GetPlatform() {
		case eventv1.Platform_PLATFORM_ANDROID:
			class = name + "Fragment"
		case eventv1.Platform_PLATFORM_WEB:
			class = "/" + strings.ToLower(name)
		}
		prev := d.prevScreen
		d.screen, d.screenAt, d.prevScreen = name, t, ""
		e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{
			ScreenName: name, ScreenClass: class, PreviousScreen: prev, Params: params,
		}}
	}
}

func (f *Fleet) point(d *device) *eventv1.Point {
	return &eventv1.Point{X: float32(f.r.IntN(int(d.ctx.GetScreenWidth()))), Y: float32(f.r.IntN(int(d.ctx.GetScreenHeight())))}
}

func (f *Fleet) tap(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		s := screenByName(d.screen)
		b := pick(f.r, s.buttons)
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{
			ButtonId: b, ButtonText: buttonText(b), ScreenName: s.name, Coordinates: f.point(d),
		}}
	})
}

// buttonText is the label shown for a button id: "add_to_cart" → "Add to cart".
func buttonText(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c == '_' {
			b[i] = ' '
		}
	}
	if len(b) > 0 && b[0] >= 'a' && b[0] <= 'z' {
		b[0] -= 'a' - 'A'
	}
	return string(b)
}

func (f *Fleet) scroll(d *device) {
	n := 1 + f.r.IntN(3)
	depth := float32(0)
	for range n {
		d.add(func(d *device, t time.Time, e *eventv1.Event) {
			dir := "down"
			if depth > 30 && f.chance(0.2) {
				dir = "up"
				depth -= float32(f.r.IntN(20))
			} else {
				depth = min(100, depth+float32(10+f.r.IntN(35)))
			}
			e.Payload = &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{
				ScreenName: d.screen, ContainerId: "main_list", ScrollDepthPercent: depth, Direction: dir,
			}}
		})
	}
}

func (f *Fleet) swipe(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		dir := pick(f.r, []string{"left", "right", "up", "down"})
		start := f.point(d)
		end := &eventv1.Point{X: start.X, Y: start.Y}
		switch dir {
		case "left":
			end.X = max(0, start.X-200)
		case "right":
			end.X = start.X + 200
		case "up":
			end.Y = max(0, start.Y-300)
		default:
			end.Y = start.Y + 300
		}
		e.Payload = &eventv1.Event_SwipeGesture{SwipeGesture: &eventv1.SwipeGesture{
			Direction: dir, ScreenName: d.screen, Start: start, End: end, DurationMs: int64(80 + f.r.IntN(300)),
		}}
	})
}

func (f *Fleet) longPress(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_LongPress{LongPress: &eventv1.LongPress{
			ElementId: "product_card", ScreenName: d.screen, Coordinates: f.point(d), DurationMs: int64(500 + f.r.IntN(1500)),
		}}
	})
}

func (f *Fleet) doubleTap(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_DoubleTap{DoubleTap: &eventv1.DoubleTap{
			ElementId: "product_image", ScreenName: d.screen, Coordinates: f.point(d),
		}}
	})
}

// input is a text_input step on the current screen.
func (f *Fleet) input(field string) step {
	return func(d *device, t time.Time, e *eventv1.Event) {
		typ := "text"
		switch field {
		case "email":
			typ = "email"
		case "password":
			typ = "password"
		case "postal_code", "card_number", "phone":
			typ = "number"
		case "search_query":
			typ = "search"
		}
		e.Payload = &eventv1.Event_TextInput{TextInput: &eventv1.TextInput{
			FieldId: field, FieldType: typ, ScreenName: d.screen,
			TextLength: int32(3 + f.r.IntN(25)), InputDurationMs: int64(800 + f.r.IntN(8000)),
		}}
	}
}

func (f *Fleet) typeText(d *device) {
	if len(screenByName(d.screen).fields) == 0 {
		d.add(f.view("Search", nil))
		d.add(f.input("search_query"))
		d.add(f.customStep("search_performed"))
		d.add(f.view("SearchResults", nil))
		return
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		f.input(pick(f.r, screenByName(d.screen).fields))(d, t, e)
	})
}

// browseProduct: the product detail screen and product_view, then maybe
// add_to_cart.
func (f *Fleet) browseProduct(d *device, source string) {
	p := pick(f.r, products)
	d.add(f.view("ProductDetail", map[string]string{"product_id": p.id}))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_ProductView{ProductView: &eventv1.ProductView{
			ProductId: p.id, ProductName: p.name, Category: p.category, PriceCents: p.cents, Currency: "USD", Source: source,
		}}
	})
	if !f.chance(0.35) {
		return
	}
	qty := int32(1)
	if f.chance(0.15) {
		qty = 2
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{
			ButtonId: "add_to_cart", ButtonText: "Add to cart", ScreenName: "ProductDetail", Coordinates: f.point(d),
		}}
	})
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		if d.cartID == "" {
			d.cartID = "cart-" + f.uuid(4, t)[:13]
		}
		d.cart = append(d.cart, cartItem{p, qty})
		e.CorrelationId = d.cartID
		e.Payload = &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{
			ProductId: p.id, ProductName: p.name, Quantity: qty, PriceCents: p.cents, Currency: "USD", CartId: d.cartID,
		}}
	})
}

func (f *Fleet) removeFromCart(d *device) {
	d.add(f.view("Cart", nil))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		reason := pick(f.r, []string{"changed_mind", "too_expensive", "found_elsewhere", ""})
		if len(d.cart) == 0 { // emptied meanwhile by a purchase: remove nothing
			e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "continue_shopping", ScreenName: "Cart"}}
			return
		}
		i := f.r.IntN(len(d.cart))
		it := d.cart[i]
		d.cart = append(d.cart[:i:i], d.cart[i+1:]...)
		e.CorrelationId = d.cartID
		e.Payload = &eventv1.Event_RemoveFromCart{RemoveFromCart: &eventv1.RemoveFromCart{
			ProductId: it.p.id, Quantity: it.qty, CartId: d.cartID, Reason: reason,
		}}
	})
}

// checkout is the funnel: checkout_start, three checkout_steps, then
// purchase_complete or purchase_failed, with drop-offs at every step.
func (f *Fleet) checkout(d *device) {
	d.add(f.view("Cart", nil))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{
			ButtonId: "checkout", ButtonText: "Checkout", ScreenName: "Cart", Coordinates: f.point(d),
		}}
	})
	if f.chance(0.15) {
		return // dropped before starting
	}
	d.add(f.view("Checkout", nil))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		items, total := cartTotals(d.cart)
		e.CorrelationId = d.cartID
		e.Payload = &eventv1.Event_CheckoutStart{CheckoutStart: &eventv1.CheckoutStart{
			CartId: d.cartID, ItemCount: items, TotalCents: total, Currency: "USD",
		}}
	})
	for i, name := range checkoutSteps {
		if i == 0 {
			d.add(f.input("address_line"), f.input("postal_code"))
		}
		if name == "payment" {
			d.add(f.input("card_number"))
		}
		d.add(func(d *device, t time.Time, e *eventv1.Event) {
			e.CorrelationId = d.cartID
			e.Payload = &eventv1.Event_CheckoutStep{CheckoutStep: &eventv1.CheckoutStep{
				CartId: d.cartID, StepNumber: int32(i + 1), StepName: name, StepDurationMs: int64(3000 + f.r.IntN(40000)),
			}}
		})
		if f.chance(0.12) {
			return // dropped off at this step
		}
	}
	method := pick(f.r, paymentMethods)
	if f.chance(0.1) {
		pe := pick(f.r, paymentErrors)
		d.add(func(d *device, t time.Time, e *eventv1.Event) {
			e.CorrelationId = d.cartID
			e.Payload = &eventv1.Event_PurchaseFailed{PurchaseFailed: &eventv1.PurchaseFailed{
				CartId: d.cartID, ErrorCode: pe.code, ErrorMessage: pe.msg, PaymentMethod: method, CheckoutStep: "payment",
			}}
		})
		return
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		items, total := cartTotals(d.cart)
		pc := &eventv1.PurchaseComplete{
			OrderId: "ord-" + f.uuid(4, t)[:13], CartId: d.cartID, ItemCount: items, TotalCents: total,
			Currency: "USD", PaymentMethod: method,
		}
		for _, it := range d.cart {
			pc.Items = append(pc.Items, &eventv1.PurchaseItem{ProductId: it.p.id, ProductName: it.p.name, Quantity: it.qty, PriceCents: it.p.cents})
		}
		e.CorrelationId = d.cartID
		e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: pc}
		d.cart, d.cartID = nil, ""
	})
	d.add(f.view("OrderConfirmation", nil))
}

func cartTotals(cart []cartItem) (items int32, cents int64) {
	for _, it := range cart {
		items += it.qty
		cents += int64(it.qty) * it.p.cents
	}
	return items, cents
}

func (f *Fleet) login(d *device) {
	method := pick(f.r, loginMethods)
	d.add(f.view("Login", nil))
	if method == "password" {
		d.add(f.input("email"), f.input("password"))
	}
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		b := "login"
		if method == "apple" || method == "google" {
			b = "sign_in_with_" + method
		}
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: b, ButtonText: buttonText(b), ScreenName: "Login", Coordinates: f.point(d)}}
	})
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		newUser := d.account == ""
		if newUser {
			d.account = "user-" + f.uuid(4, t)[:8]
		}
		d.user = d.account
		e.UserId = d.user
		e.Payload = &eventv1.Event_UserLogin{UserLogin: &eventv1.UserLogin{UserId: d.user, Method: method, IsNewUser: newUser}}
	})
	d.add(f.view("Home", nil))
}

func (f *Fleet) signup(d *device) {
	method := pick(f.r, loginMethods[:3])
	ref := pick(f.r, referrals)
	d.add(f.view("Signup", nil), f.input("email"), f.input("password"), f.input("display_name"))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		d.account = "user-" + f.uuid(4, t)[:8]
		e.Payload = &eventv1.Event_UserSignup{UserSignup: &eventv1.UserSignup{UserId: d.account, Method: method, ReferralSource: ref}}
	})
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		d.user = d.account
		e.UserId = d.user
		e.Payload = &eventv1.Event_UserLogin{UserLogin: &eventv1.UserLogin{UserId: d.user, Method: method, IsNewUser: true}}
	})
	if f.chance(0.5) {
		f.permissionFlow(d, "notifications")
	}
}

func (f *Fleet) logout(d *device) {
	d.add(f.view("Settings", nil))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "logout", ButtonText: "Logout", ScreenName: "Settings", Coordinates: f.point(d)}}
	})
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_UserLogout{UserLogout: &eventv1.UserLogout{UserId: d.user, Reason: "user_initiated"}}
		e.UserId, d.user = d.user, ""
		d.add(f.view("Home", nil))
	})
}

func (f *Fleet) updateProfile(d *device) {
	d.add(f.view("Profile", nil), f.input("display_name"))
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		n := 1 + f.r.IntN(3)
		fields := make([]string, 0, n)
		for _, i := range f.r.Perm(len(profileFields))[:n] {
			fields = append(fields, profileFields[i])
		}
		e.Payload = &eventv1.Event_UserProfileUpdate{UserProfileUpdate: &eventv1.UserProfileUpdate{UserId: d.user, FieldsUpdated: fields}}
	})
}

func (f *Fleet) goBackground(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		d.phase, d.bgAt = background, t
		e.Payload = &eventv1.Event_AppBackground{AppBackground: &eventv1.AppBackground{
			ForegroundDurationMs: t.Sub(d.fgAt).Milliseconds(), CurrentScreen: d.screen,
		}}
	})
}

func (f *Fleet) networkChange(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		prev := d.ctx.GetNetworkType()
		next := pick(f.r, networks)
		for next == prev {
			next = pick(f.r, networks)
		}
		ctx := proto.Clone(d.ctx).(*eventv1.DeviceContext)
		ctx.NetworkType = next
		d.ctx = ctx
		e.DeviceContext = ctx
		e.Payload = &eventv1.Event_NetworkChange{NetworkChange: &eventv1.NetworkChange{PreviousType: prev, CurrentType: next}}
	})
}

func (f *Fleet) permission(d *device) { f.permissionFlow(d, pick(f.r, permissions)) }

func (f *Fleet) permissionFlow(d *device, kind string) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		e.Payload = &eventv1.Event_PermissionRequest{PermissionRequest: &eventv1.PermissionRequest{PermissionType: kind, TriggerScreen: d.screen}}
	})
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		status := "granted"
		switch p := f.r.IntN(100); {
		case p < 25:
			status = "denied"
		case p < 30 && kind == "photos":
			status = "limited"
		}
		e.Payload = &eventv1.Event_PermissionResult{PermissionResult: &eventv1.PermissionResult{PermissionType: kind, Status: status}}
	})
}

func (f *Fleet) battery(d *device) {
	d.add(func(d *device, t time.Time, e *eventv1.Event) {
		state := "unplugged"
		switch {
		case f.chance(0.2):
			state = "charging"
			d.battery = min(1, d.battery+0.1)
		default:
			d.battery = max(0.01, d.battery-0.05)
		}
		if d.battery >= 1 && state == "charging" {
			state = "full"
		}
		e.Payload = &eventv1.Event_BatteryChange{BatteryChange: &eventv1.BatteryChange{BatteryLevel: d.battery, State: state}}
	})
}

func (f *Fleet) memoryWarning() step {
	return func(d *device, t time.Time, e *eventv1.Event) {
		level := "low"
		if f.chance(0.3) {
			level = "critical"
		}
		avail := int64(20+f.r.IntN(180)) << 20
		e.Payload = &eventv1.Event_MemoryWarning{MemoryWarning: &eventv1.MemoryWarning{
			AvailableMemoryBytes: avail, UsedMemoryBytes: int64(600+f.r.IntN(1400)) << 20, Level: level,
		}}
	}
}

// crashNow ends the session without an event: the crash is reported by the
// next launch, as a real SDK does. The device emits its launch flow now.
func (f *Fleet) crashNow(d *device) {
	c := pick(f.r, crashes)
	d.crash = &eventv1.AppCrash{
		CrashType: c.kind, CrashMessage: c.msg, CurrentScreen: d.screen,
		StackTrace: fmt.Sprintf("0 %s\n1 UIKitCore 0x1a2b3c\n2 libdispatch.dylib _dispatch_call_block_and_release\n3 main", c.frame),
	}
	d.phase = closed
	f.launch(d)
}

func (f *Fleet) custom(d *device) { d.add(f.customStep(pick(f.r, customEvents))) }

func (f *Fleet) customStep(name string) step {
	return func(d *device, t time.Time, e *eventv1.Event) {
		ce := &eventv1.CustomEvent{EventName: name, StringParams: map[string]string{"screen": d.screen}}
		switch name {
		case "search_performed":
			ce.IntParams = map[string]int64{"results": int64(f.r.IntN(200)), "query_length": int64(3 + f.r.IntN(20))}
			ce.BoolParams = map[string]bool{"has_filters": f.chance(0.3)}
		case "share":
			ce.StringParams["channel"] = pick(f.r, []string{"messages", "whatsapp", "copy_link", "email"})
		case "promo_banner_shown":
			ce.StringParams["banner_id"] = fmt.Sprintf("promo-%d", 1+f.r.IntN(5))
			ce.IntParams = map[string]int64{"position": int64(f.r.IntN(4))}
		case "rating_prompt":
			ce.FloatParams = map[string]float64{"stars": float64(1 + f.r.IntN(5))}
			ce.BoolParams = map[string]bool{"dismissed": f.chance(0.6)}
		case "video_played":
			ce.FloatParams = map[string]float64{"watched_fraction": f.r.Float64()}
			ce.IntParams = map[string]int64{"duration_s": int64(10 + f.r.IntN(120))}
		}
		e.Payload = &eventv1.Event_CustomEvent{CustomEvent: ce}
	}
}
