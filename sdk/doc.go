// Package sdk is the Go client of Causality. Events flow in through Track
// (and the typed helpers built on it), are queued (on disk with
// WithQueueDir, bounded, oldest dropped first) and flow out as Batch frames
// on one long-lived stream to a collector, which acknowledges each event once
// Kafka has it; only then is the event removed from the queue.
//
//	c, err := sdk.New("collector.example.com:7070", key, sdk.WithQueueDir(dir))
//	c.ScreenView("home", "")
//	defer c.Close(ctx)
//
// Track never blocks and does no I/O on the caller's goroutine. The default
// transport is raw TCP frames (TCP); sdk/grpctransport and sdk/wstransport
// provide the gRPC stream and WebSocket, so this package links neither.
// docs/sdk.md has the defaults and guarantees; docs/protocol.md the wire.
package sdk
