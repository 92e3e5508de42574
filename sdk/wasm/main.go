//go:build js && wasm

// Command wasm is the Causality SDK for web pages, built with GOOS=js
// GOARCH=wasm. Events flow in from JavaScript as protobuf JSON of
// causality.event.v1.Event (the TypeScript wrapper in this directory builds
// them: index.ts) and flow out through causality.dev/sdk/mobile and
// causality.dev/sdk over the WebSocket transport (the browser's WebSocket)
// to a collector's GET /v1/stream. The queue is in memory: bounded by the
// config's queue limits, lost when the page goes away (docs/sdk.md).
//
// main registers one function, globalThis.__causalityNewClient(addr, key,
// configJSON), and keeps running; each call returns a client object (or an
// Error) whose methods are listed in newClient.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"syscall/js"

	"causality.dev/sdk/mobile"
)

func main() {
	js.Global().Set("__causalityNewClient", js.FuncOf(newClient))
	select {}
}

var jsError = js.Global().Get("Error")

// newClient(addr, key, configJSON) returns a client object or an Error.
// configJSON holds fields of mobile.Config (e.g. {"flushEvents":10,
// "platform":"web"}); the transport is always "ws".
func newClient(_ js.Value, args []js.Value) any {
	if len(args) != 3 || args[0].Type() != js.TypeString || args[1].Type() != js.TypeString || args[2].Type() != js.TypeString {
		return jsError.New("causality: newClient(addr, key, configJSON) takes three strings")
	}
	cfg := mobile.NewConfig()
	cfg.Transport = "" // the only one here is "ws"; the JSON may name it
	dec := json.NewDecoder(bytes.NewReader([]byte(args[2].String())))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return jsError.New(fmt.Sprintf("causality: config JSON: %v", err))
	}
	if cfg.Transport != "" && cfg.Transport != "ws" {
		return jsError.New(fmt.Sprintf("causality: transport %q: the web build has only ws", cfg.Transport))
	}
	cfg.Transport = "ws"
	c, err := mobile.NewClient(args[0].String(), args[1].String(), "", cfg)
	if err != nil {
		return jsError.New(err.Error())
	}
	return js.ValueOf(map[string]any{
		// track(eventJSON) returns the event id ("" if discarded) or an Error.
		"track": js.FuncOf(func(_ js.Value, a []js.Value) any {
			if len(a) != 1 || a[0].Type() != js.TypeString {
				return jsError.New("causality: track(eventJSON) takes a string")
			}
			id, err := c.TrackJSON(a[0].String())
			if err != nil {
				return jsError.New(err.Error())
			}
			return id
		}),
		"identify": js.FuncOf(func(_ js.Value, a []js.Value) any {
			if len(a) != 1 || a[0].Type() != js.TypeString {
				return jsError.New("causality: identify(userId) takes a string")
			}
			c.Identify(a[0].String())
			return nil
		}),
		"reset": js.FuncOf(func(js.Value, []js.Value) any { c.Reset(); return nil }),
		"setConsent": js.FuncOf(func(_ js.Value, a []js.Value) any {
			if len(a) != 1 || a[0].Type() != js.TypeNumber {
				return jsError.New("causality: setConsent(state) takes 0, 1 or 2")
			}
			if err := c.SetConsent(a[0].Int()); err != nil {
				return jsError.New(err.Error())
			}
			return nil
		}),
		"optOut": js.FuncOf(func(_ js.Value, a []js.Value) any {
			if len(a) != 1 || a[0].Type() != js.TypeBoolean {
				return jsError.New("causality: optOut(out) takes a boolean")
			}
			c.OptOut(a[0].Bool())
			return nil
		}),
		"background": js.FuncOf(func(js.Value, []js.Value) any { c.OnBackground(); return nil }),
		"foreground": js.FuncOf(func(js.Value, []js.Value) any { c.OnForeground(); return nil }),
		// flush(timeoutMs) and close(timeoutMs) return Promises: they wait
		// for the collector, and a js.Func must not block.
		"flush": js.FuncOf(func(_ js.Value, a []js.Value) any { return promise(a, c.Flush) }),
		"close": js.FuncOf(func(_ js.Value, a []js.Value) any { return promise(a, c.Close) }),
		"stats": js.FuncOf(func(js.Value, []js.Value) any {
			s := c.Stats()
			return js.ValueOf(map[string]any{
				"tracked": s.Tracked, "discarded": s.Discarded, "dropped": s.Dropped, "invalid": s.Invalid,
				"acked": s.Acked, "queued": s.Queued, "held": s.Held, "connected": s.Connected, "lastError": s.LastError,
			})
		}),
	})
}

// promise runs f(timeoutMs) on a goroutine and settles a Promise with its
// result.
func promise(args []js.Value, f func(timeoutMs int) error) any {
	if len(args) != 1 || args[0].Type() != js.TypeNumber {
		return js.Global().Get("Promise").Call("reject", jsError.New("causality: takes a timeout in milliseconds"))
	}
	ms := args[0].Int()
	var exec js.Func
	exec = js.FuncOf(func(_ js.Value, cb []js.Value) any {
		resolve, reject := cb[0], cb[1]
		go func() {
			defer exec.Release()
			if err := f(ms); err != nil {
				reject.Invoke(jsError.New(err.Error()))
				return
			}
			resolve.Invoke()
		}()
		return nil
	})
	return js.Global().Get("Promise").New(exec)
}
