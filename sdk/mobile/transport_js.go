//go:build js

package mobile

import (
	"fmt"

	"causality.dev/sdk"
)

// socketTransport: a browser has no sockets, only WebSocket ("ws").
func socketTransport(name string) (sdk.Option, error) {
	return nil, fmt.Errorf("transport %q: the web build has only ws", name)
}
