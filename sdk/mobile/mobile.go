// Package mobile is the Causality SDK for apps that cannot take Go types:
// Android and iOS through gomobile/gobind, and the js/wasm build (sdk/wasm).
// Events flow in through typed methods taking strings, integers, floats and
// booleans, or as protobuf JSON (TrackJSON); they flow out through
// causality.dev/sdk (queue, one stream, acks) to a collector.
//
// Its exported API uses only types gobind can bind: no maps, channels,
// generics, contexts or variadic arguments; durations are milliseconds.
// The host app passes the storage dir (Android: Context.getFilesDir(); iOS:
// Application Support) so that the queue, install id, user id and opt-out
// survive launches, and reports its lifecycle with OnForeground,
// OnBackground and OnTerminate. No method blocks except Flush, Sync, Close
// and OnTerminate, each bounded by the timeout it is given: call them off
// the UI thread.
package mobile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/sdk"
	"causality.dev/sdk/wstransport"
)

// Consent states for Config.Consent and Client.SetConsent (see sdk.Consent).
const (
	ConsentGranted = 0
	ConsentPending = 1
	ConsentDenied  = 2
)

// Config is the client's configuration. NewConfig (in Java and Kotlin `new
// Config()`) fills the defaults of causality.dev/sdk; a zero number means
// the default too. Device fields are stamped on every event.
type Config struct {
	// Transport is "tcp" (default: raw TCP frames, addr is host:port),
	// "tls" (TCP frames in TLS, host:port) or "ws" (WebSocket: a ws:// or
	// wss:// URL, or host:port meaning ws://host:port/v1/stream).
	Transport string

	FlushEvents     int     // a batch leaves at this many events (default 50)
	FlushIntervalMs int     // or when the oldest waited this long (default 1000)
	QueueEvents     int     // queue bound in events (default 10000)
	QueueBytes      int64   // queue bound in bytes (default 8 MiB)
	BufferEvents    int     // events Track hands over before the writer has queued them (default 1024)
	SampleRate      float64 // fraction of devices kept, in [0, 1]; NewConfig sets 1
	TimeoutMs       int     // dial, handshake and each write (default 10000)
	MinBackoffMs    int     // reconnect backoff floor (default 250)
	MaxBackoffMs    int     // and ceiling (default 30000)
	NoFsync         bool    // skip fsync of queue writes: survives a killed app, not a power loss
	Consent         int     // ConsentGranted (default), ConsentPending or ConsentDenied
	DeviceID        string  // device_id of every event (default: the install id)

	Platform     string // "ios", "android", "web" or ""
	OSVersion    string
	AppVersion   string
	BuildNumber  string
	DeviceModel  string
	Manufacturer string
	ScreenWidth  int
	ScreenHeight int
	Locale       string // BCP 47, e.g. "en-US"
	Timezone     string // IANA, e.g. "Europe/Paris"
	NetworkType  string // see NetworkChange
	Carrier      string
	Jailbroken   bool
	Emulator     bool
}

// NewConfig returns the default configuration.
func NewConfig() *Config {
	return &Config{Transport: "tcp", SampleRate: 1}
}

// options translates the config, or says which field is wrong.
func (c *Config) options(storageDir string) ([]sdk.Option, error) {
	var opts []sdk.Option
	if storageDir != "" {
		opts = append(opts, sdk.WithQueueDir(storageDir))
	}
	switch t := strings.ToLower(c.Transport); t {
	case "", "tcp", "tls":
		o, err := socketTransport(t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	case "ws", "websocket":
		opts = append(opts, sdk.WithTransport(wstransport.New()))
	default:
		return nil, fmt.Errorf("transport %q: want tcp, tls or ws", c.Transport)
	}
	if c.FlushEvents != 0 || c.FlushIntervalMs != 0 {
		opts = append(opts, sdk.WithFlush(orDefault(c.FlushEvents, sdk.DefaultFlushEvents), ms(c.FlushIntervalMs, sdk.DefaultFlushInterval)))
	}
	if c.QueueEvents != 0 || c.QueueBytes != 0 {
		qb := c.QueueBytes
		if qb == 0 {
			qb = sdk.DefaultQueueBytes
		}
		opts = append(opts, sdk.WithQueueLimits(orDefault(c.QueueEvents, sdk.DefaultQueueEvents), qb))
	}
	if c.BufferEvents != 0 {
		opts = append(opts, sdk.WithBuffer(c.BufferEvents))
	}
	if c.TimeoutMs != 0 {
		opts = append(opts, sdk.WithTimeout(ms(c.TimeoutMs, 0)))
	}
	if c.MinBackoffMs != 0 || c.MaxBackoffMs != 0 {
		opts = append(opts, sdk.WithBackoff(ms(c.MinBackoffMs, sdk.DefaultMinBackoff), ms(c.MaxBackoffMs, sdk.DefaultMaxBackoff)))
	}
	if c.Consent < ConsentGranted || c.Consent > ConsentDenied {
		return nil, fmt.Errorf("consent %d: want 0 (granted), 1 (pending) or 2 (denied)", c.Consent)
	}
	opts = append(opts, sdk.WithSampleRate(c.SampleRate), sdk.WithFsync(!c.NoFsync), sdk.WithConsent(sdk.Consent(c.Consent)))
	if c.DeviceID != "" {
		opts = append(opts, sdk.WithDeviceID(c.DeviceID))
	}
	d, err := c.device()
	if err != nil {
		return nil, err
	}
	return append(opts, sdk.WithDeviceContext(d)), nil
}

func (c *Config) device() (*eventv1.DeviceContext, error) {
	p, ok := platforms[strings.ToLower(c.Platform)]
	if !ok {
		return nil, fmt.Errorf("platform %q: want ios, android, web or empty", c.Platform)
	}
	n, err := networkType(c.NetworkType)
	if err != nil {
		return nil, err
	}
	return &eventv1.DeviceContext{
		Platform: p, OsVersion: c.OSVersion, AppVersion: c.AppVersion, BuildNumber: c.BuildNumber,
		DeviceModel: c.DeviceModel, Manufacturer: c.Manufacturer,
		ScreenWidth: int32(c.ScreenWidth), ScreenHeight: int32(c.ScreenHeight),
		Locale: c.Locale, Timezone: c.Timezone, NetworkType: n, Carrier: c.Carrier,
		IsJailbroken: c.Jailbroken, IsEmulator: c.Emulator,
		SdkVersion: sdkName + "/" + sdk.Version,
	}, nil
}

// sdkName is the SDK name stamped in DeviceContext.sdk_version.
const sdkName = "causality-mobile"

var platforms = map[string]eventv1.Platform{
	"":        eventv1.Platform_PLATFORM_UNSPECIFIED,
	"ios":     eventv1.Platform_PLATFORM_IOS,
	"android": eventv1.Platform_PLATFORM_ANDROID,
	"web":     eventv1.Platform_PLATFORM_WEB,
}

var networkTypes = map[string]eventv1.NetworkType{
	"":         eventv1.NetworkType_NETWORK_TYPE_UNSPECIFIED,
	"wifi":     eventv1.NetworkType_NETWORK_TYPE_WIFI,
	"2g":       eventv1.NetworkType_NETWORK_TYPE_CELLULAR_2G,
	"3g":       eventv1.NetworkType_NETWORK_TYPE_CELLULAR_3G,
	"4g":       eventv1.NetworkType_NETWORK_TYPE_CELLULAR_4G,
	"5g":       eventv1.NetworkType_NETWORK_TYPE_CELLULAR_5G,
	"ethernet": eventv1.NetworkType_NETWORK_TYPE_ETHERNET,
	"offline":  eventv1.NetworkType_NETWORK_TYPE_OFFLINE,
}

func networkType(s string) (eventv1.NetworkType, error) {
	n, ok := networkTypes[strings.ToLower(s)]
	if !ok {
		return 0, fmt.Errorf("network type %q: want wifi, 2g, 3g, 4g, 5g, ethernet, offline or empty", s)
	}
	return n, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func ms(v int, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return time.Duration(v) * time.Millisecond
}

// Client records events and delivers them; see causality.dev/sdk.Client.
// Its methods are safe for concurrent use.
type Client struct {
	c *sdk.Client
}

// NewClient returns a client for the collector at addr with the app's
// ingest key. storageDir holds the queue, install id, user id and opt-out
// flag; it is created if missing. An empty storageDir keeps everything in
// memory (lost when the process ends). config may be nil (the defaults).
// NewClient does not connect: the first event does.
func NewClient(addr, key, storageDir string, config *Config) (*Client, error) {
	if config == nil {
		config = NewConfig()
	}
	opts, err := config.options(storageDir)
	if err != nil {
		return nil, fmt.Errorf("causality: config: %w", err)
	}
	c, err := sdk.New(addr, key, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// TrackJSON records one event given as protobuf JSON of
// causality.event.v1.Event, e.g. {"screenView":{"screenName":"Home"}}, and
// returns its event id (the one in the JSON, or the one the SDK gave; ""
// when the event was discarded: opt-out, denied consent, sampling, closed).
// Fields left out (event id, timestamp, ids, device context) are filled as
// by sdk.Client.Track. It fails only on JSON that is not an Event.
func (c *Client) TrackJSON(eventJSON string) (string, error) {
	e := &eventv1.Event{}
	if err := protojson.Unmarshal([]byte(eventJSON), e); err != nil {
		return "", fmt.Errorf("causality: event JSON: %w", err)
	}
	c.c.Track(e) // fills EventId before handing e over; nobody writes it after
	return e.EventId, nil
}

// ScreenView records that a screen became visible.
func (c *Client) ScreenView(screen, previous string) { c.c.ScreenView(screen, previous) }

// ScreenExit records that a screen was left after durationMs.
func (c *Client) ScreenExit(screen string, durationMs int64, next string) {
	c.c.ScreenExit(screen, time.Duration(durationMs)*time.Millisecond, next)
}

// ButtonTap records a tap on a button of a screen.
func (c *Client) ButtonTap(buttonID, text, screen string) { c.c.ButtonTap(buttonID, text, screen) }

// TextInput records that text of length characters was entered in a field.
func (c *Client) TextInput(fieldID, screen string, length int, durationMs int64) {
	c.c.TextInput(fieldID, screen, length, time.Duration(durationMs)*time.Millisecond)
}

// Login records a sign-in and identifies the user.
func (c *Client) Login(userID, method string) { c.c.Login(userID, method) }

// Logout records a sign-out and forgets the user.
func (c *Client) Logout(reason string) { c.c.Logout(reason) }

// Signup records a new account and identifies the user.
func (c *Client) Signup(userID, method string) { c.c.Signup(userID, method) }

// ProductView records that a product was shown.
func (c *Client) ProductView(productID, name string, priceCents int64, currency string) {
	c.c.ProductView(productID, name, priceCents, currency)
}

// AddToCart records that a product was added to a cart.
func (c *Client) AddToCart(cartID, productID string, quantity int, priceCents int64, currency string) {
	c.c.AddToCart(cartID, productID, quantity, priceCents, currency)
}

// RemoveFromCart records that a product was removed from a cart.
func (c *Client) RemoveFromCart(cartID, productID string, quantity int) {
	c.c.RemoveFromCart(cartID, productID, quantity)
}

// CheckoutStart records that checkout began.
func (c *Client) CheckoutStart(cartID string, items int, totalCents int64, currency string) {
	c.c.CheckoutStart(cartID, items, totalCents, currency)
}

// Items is the list of items of a purchase.
type Items struct {
	items []*eventv1.PurchaseItem
}

// NewItems returns an empty list.
func NewItems() *Items { return &Items{} }

// Add appends an item.
func (it *Items) Add(productID, name string, quantity int, priceCents int64) {
	it.items = append(it.items, &eventv1.PurchaseItem{ProductId: productID, ProductName: name, Quantity: int32(quantity), PriceCents: priceCents})
}

// Purchase records a paid order; items may be nil.
func (c *Client) Purchase(orderID string, totalCents int64, currency string, items *Items) {
	var list []*eventv1.PurchaseItem
	if items != nil {
		list = append(list, items.items...)
	}
	c.c.Purchase(orderID, totalCents, currency, list...)
}

// PurchaseFailed records a failed payment.
func (c *Client) PurchaseFailed(cartID, errorCode, message string) {
	c.c.PurchaseFailed(cartID, errorCode, message)
}

// AppStart records a launch that took launchMs.
func (c *Client) AppStart(cold bool, launchMs int64, source string) {
	c.c.AppStart(cold, time.Duration(launchMs)*time.Millisecond, source)
}

// AppCrash records a crash (usually reported at the next launch).
func (c *Client) AppCrash(crashType, message, stack, screen string) {
	c.c.AppCrash(crashType, message, stack, screen)
}

// NetworkChange records a change of connectivity between wifi, 2g, 3g, 4g,
// 5g, ethernet, offline or "" (unknown). Other names are an error.
func (c *Client) NetworkChange(from, to string) error {
	f, err := networkType(from)
	if err != nil {
		return err
	}
	t, err := networkType(to)
	if err != nil {
		return err
	}
	c.c.NetworkChange(f, t)
	return nil
}

// Params are the parameters of a custom event.
type Params struct {
	m map[string]any
}

// NewParams returns an empty set of parameters.
func NewParams() *Params { return &Params{m: map[string]any{}} }

// PutString sets a string parameter.
func (p *Params) PutString(k, v string) { p.m[k] = v }

// PutInt sets an integer parameter.
func (p *Params) PutInt(k string, v int64) { p.m[k] = v }

// PutFloat sets a floating-point parameter.
func (p *Params) PutFloat(k string, v float64) { p.m[k] = v }

// PutBool sets a boolean parameter.
func (p *Params) PutBool(k string, v bool) { p.m[k] = v }

// Custom records an app-defined event; params may be nil.
func (c *Client) Custom(name string, params *Params) {
	var m map[string]any
	if params != nil {
		m = params.m
	}
	c.c.Custom(name, m)
}

// Identify sets the user id of later events (kept in the storage dir).
func (c *Client) Identify(userID string) { c.c.Identify(userID) }

// Reset forgets the user id and starts a new session.
func (c *Client) Reset() { c.c.Reset() }

// SetConsent sets ConsentGranted, ConsentPending or ConsentDenied.
func (c *Client) SetConsent(state int) error {
	if state < ConsentGranted || state > ConsentDenied {
		return fmt.Errorf("causality: consent %d: want 0 (granted), 1 (pending) or 2 (denied)", state)
	}
	c.c.SetConsent(sdk.Consent(state))
	return nil
}

// OptOut stops (true) or resumes (false) tracking for this install; the
// choice is kept in the storage dir.
func (c *Client) OptOut(out bool) { c.c.OptOut(out) }

// OnForeground: the app is in the foreground again. It does not block.
func (c *Client) OnForeground() { c.c.Foreground() }

// OnBackground: the app went to the background. Queued events are sent at
// once (the final flush) and the connection closes once nothing is left;
// it does not block. To know when the events are out (e.g. before ending an
// iOS background task), call Flush afterwards off the UI thread.
func (c *Client) OnBackground() { c.c.Background() }

// OnTerminate: the app is about to end. It closes the client (see Close).
func (c *Client) OnTerminate(timeoutMs int) error { return c.Close(timeoutMs) }

// Flush sends what is queued and waits until every event tracked before the
// call is acknowledged by the collector, or timeoutMs passes (an error;
// the events stay queued). It blocks: call it off the UI thread.
func (c *Client) Flush(timeoutMs int) error {
	ctx, cancel := timeout(timeoutMs)
	defer cancel()
	return c.c.Flush(ctx)
}

// Sync waits until every event tracked before the call is in the storage
// dir, or timeoutMs passes.
func (c *Client) Sync(timeoutMs int) error {
	ctx, cancel := timeout(timeoutMs)
	defer cancel()
	return c.c.Sync(ctx)
}

// Close flushes, says goodbye and stops the client; events not acknowledged
// within timeoutMs stay in the storage dir for the next launch. Later calls
// return an error.
func (c *Client) Close(timeoutMs int) error {
	ctx, cancel := timeout(timeoutMs)
	defer cancel()
	return c.c.Close(ctx)
}

func timeout(ms int) (context.Context, context.CancelFunc) {
	if ms <= 0 {
		ms = 1
	}
	return context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
}

// IsTimeout reports whether err came from a Flush, Sync or Close whose
// timeout passed.
func IsTimeout(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

// Stats is a snapshot of the client's counters (see sdk.Stats).
type Stats struct {
	Tracked, Discarded, Dropped, Invalid, Acked int64
	Queued, Held                                int
	Connected                                   bool
	LastError                                   string // "" when none
}

// Stats returns the client's counters.
func (c *Client) Stats() *Stats {
	s := c.c.Stats()
	out := &Stats{
		Tracked: int64(s.Tracked), Discarded: int64(s.Discarded), Dropped: int64(s.Dropped),
		Invalid: int64(s.Invalid), Acked: int64(s.Acked), Queued: s.Queued, Held: s.Held,
		Connected: s.Connected,
	}
	if s.LastError != nil {
		out.LastError = s.LastError.Error()
	}
	return out
}
