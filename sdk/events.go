package sdk

import (
	"fmt"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Typed helpers for the event catalogue (api/causality/event/v1). Each
// builds one Event and calls Track, so each never blocks. For fields a
// helper does not take, or for properties, build the Event and call Track.

// ScreenView records that a screen became visible.
func (c *Client) ScreenView(screen, previous string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: screen, PreviousScreen: previous}}})
}

// ScreenExit records that a screen was left after being shown for d.
func (c *Client) ScreenExit(screen string, d time.Duration, next string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_ScreenExit{ScreenExit: &eventv1.ScreenExit{ScreenName: screen, DurationMs: d.Milliseconds(), NextScreen: next}}})
}

// ButtonTap records a tap on a button of a screen.
func (c *Client) ButtonTap(buttonID, text, screen string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: buttonID, ButtonText: text, ScreenName: screen}}})
}

// TextInput records that text was entered in a field: its length only.
func (c *Client) TextInput(fieldID, screen string, length int, d time.Duration) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_TextInput{TextInput: &eventv1.TextInput{FieldId: fieldID, ScreenName: screen, TextLength: int32(length), InputDurationMs: d.Milliseconds()}}})
}

// Login records a sign-in and identifies the user (see Identify).
func (c *Client) Login(userID, method string) {
	c.Identify(userID)
	c.Track(&eventv1.Event{Payload: &eventv1.Event_UserLogin{UserLogin: &eventv1.UserLogin{UserId: userID, Method: method}}})
}

// Logout records a sign-out and forgets the user (see Reset).
func (c *Client) Logout(reason string) {
	c.mu.Lock()
	user := c.userID
	c.mu.Unlock()
	c.Track(&eventv1.Event{Payload: &eventv1.Event_UserLogout{UserLogout: &eventv1.UserLogout{UserId: user, Reason: reason}}})
	c.Reset()
}

// Signup records that a user created an account and identifies them.
func (c *Client) Signup(userID, method string) {
	c.Identify(userID)
	c.Track(&eventv1.Event{Payload: &eventv1.Event_UserSignup{UserSignup: &eventv1.UserSignup{UserId: userID, Method: method}}})
}

// ProductView records that a product was shown.
func (c *Client) ProductView(productID, name string, priceCents int64, currency string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_ProductView{ProductView: &eventv1.ProductView{ProductId: productID, ProductName: name, PriceCents: priceCents, Currency: currency}}})
}

// AddToCart records that a product was added to a cart.
func (c *Client) AddToCart(cartID, productID string, quantity int, priceCents int64, currency string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{CartId: cartID, ProductId: productID, Quantity: int32(quantity), PriceCents: priceCents, Currency: currency}}})
}

// RemoveFromCart records that a product was removed from a cart.
func (c *Client) RemoveFromCart(cartID, productID string, quantity int) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_RemoveFromCart{RemoveFromCart: &eventv1.RemoveFromCart{CartId: cartID, ProductId: productID, Quantity: int32(quantity)}}})
}

// CheckoutStart records that checkout began.
func (c *Client) CheckoutStart(cartID string, items int, totalCents int64, currency string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_CheckoutStart{CheckoutStart: &eventv1.CheckoutStart{CartId: cartID, ItemCount: int32(items), TotalCents: totalCents, Currency: currency}}})
}

// Purchase records a paid order.
func (c *Client) Purchase(orderID string, totalCents int64, currency string, items ...*eventv1.PurchaseItem) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{
		OrderId: orderID, TotalCents: totalCents, Currency: currency, ItemCount: int32(len(items)), Items: items,
	}}})
}

// PurchaseFailed records a failed payment.
func (c *Client) PurchaseFailed(cartID, errorCode, message string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_PurchaseFailed{PurchaseFailed: &eventv1.PurchaseFailed{CartId: cartID, ErrorCode: errorCode, ErrorMessage: message}}})
}

// AppStart records a launch.
func (c *Client) AppStart(cold bool, launch time.Duration, source string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{IsColdStart: cold, LaunchDurationMs: launch.Milliseconds(), LaunchSource: source}}})
}

// AppCrash records a crash (usually reported at the next launch).
func (c *Client) AppCrash(crashType, message, stack, screen string) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{CrashType: crashType, CrashMessage: message, StackTrace: stack, CurrentScreen: screen}}})
}

// NetworkChange records a change of connectivity.
func (c *Client) NetworkChange(from, to eventv1.NetworkType) {
	c.Track(&eventv1.Event{Payload: &eventv1.Event_NetworkChange{NetworkChange: &eventv1.NetworkChange{PreviousType: from, CurrentType: to}}})
}

// Custom records an app-defined event. Parameter values of type string,
// bool, int, int32, int64, float32 or float64 keep their type; others are
// formatted with fmt.Sprint.
func (c *Client) Custom(name string, params map[string]any) {
	ce := &eventv1.CustomEvent{EventName: name}
	for k, v := range params {
		switch v := v.(type) {
		case string:
			ce.StringParams = setKey(ce.StringParams, k, v)
		case bool:
			ce.BoolParams = setKey(ce.BoolParams, k, v)
		case int:
			ce.IntParams = setKey(ce.IntParams, k, int64(v))
		case int32:
			ce.IntParams = setKey(ce.IntParams, k, int64(v))
		case int64:
			ce.IntParams = setKey(ce.IntParams, k, v)
		case float32:
			ce.FloatParams = setKey(ce.FloatParams, k, float64(v))
		case float64:
			ce.FloatParams = setKey(ce.FloatParams, k, v)
		default:
			ce.StringParams = setKey(ce.StringParams, k, fmt.Sprint(v))
		}
	}
	c.Track(&eventv1.Event{Payload: &eventv1.Event_CustomEvent{CustomEvent: ce}})
}

func setKey[V any](m map[string]V, k string, v V) map[string]V {
	if m == nil {
		m = map[string]V{}
	}
	m[k] = v
	return m
}
