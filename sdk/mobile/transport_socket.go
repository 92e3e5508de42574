//go:build !js

package mobile

import (
	"crypto/tls"

	"causality.dev/sdk"
)

// socketTransport is TCP frames, in TLS for "tls".
func socketTransport(name string) (sdk.Option, error) {
	if name == "tls" {
		return sdk.WithTransport(sdk.TCP{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}), nil
	}
	return sdk.WithTransport(sdk.TCP{}), nil
}
