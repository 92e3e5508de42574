//go:build js

package sdk

// defaultTransport is nil in the browser, which has no sockets: the web
// build passes sdk/wstransport. Leaving TCP (and crypto/tls) out of js/wasm
// keeps the download small.
func defaultTransport() Transport { return nil }
