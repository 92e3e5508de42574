package main

// Ingest benchmarks against the real broker (make bench; results in
// docs/benchmarks.md): events/s through raw TCP → collector → Kafka, and
// the same serialized events written by kafka-go directly, with the same
// producer settings and the same number of produce calls in flight. Their
// ratio is what the collector costs.
//
// This file imports kafka-go for the baseline only: everywhere else only
// internal/kafka may import it.

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// The shape of one benchmark iteration, shared by both benchmarks.
const (
	benchConns    = 4   // client connections (producers in the baseline)
	benchCredits  = 8   // batches in flight per connection
	benchBatch    = 250 // events per batch
	benchPerConn  = 40  // batches per connection per iteration
	benchPerIter  = benchConns * benchPerConn * benchBatch
	benchAppID    = "bench-app"
	benchIDSuffix = 12 // hex digits at the end of each event id rewritten per iteration
)

func benchKafka(b *testing.B) kafka.Config {
	b.Helper()
	if os.Getenv("CAUSALITY_TEST_KAFKA") == "" {
		b.Skip("set CAUSALITY_TEST_KAFKA: load figures come only from the real broker, never the embedded one")
	}
	return kafkatest.Config(b)
}

// benchEvent is a typical SDK event: device context, a few properties.
func benchEvent(i int) *eventv1.Event {
	e := newEvent(benchAppID, fmt.Sprintf("device-%04d", i%1000))
	e.UserId = fmt.Sprintf("user-%d", i%300)
	e.Sequence = uint64(i)
	e.Properties["ab_bucket"] = "b"
	e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "checkout", ButtonText: "Buy now", ScreenName: "Cart"}}
	return e
}

// idRewriter makes event ids unique per iteration by rewriting their last
// hex digits in place, so the collector's duplicate filter never short-cuts
// a resent event and no frame has to be marshalled again.
type idRewriter struct {
	next atomic.Uint64
}

func (r *idRewriter) rewrite(frame []byte, offsets []int) {
	var n [8]byte
	for _, off := range offsets {
		v := r.next.Add(1)
		for i := range n {
			n[7-i] = byte(v >> (8 * i))
		}
		hex.Encode(frame[off+36-benchIDSuffix:off+36], n[8-benchIDSuffix/2:])
	}
}

func BenchmarkIngestTCP(b *testing.B) {
	cfg := benchKafka(b)
	c := startCollectorOn(b, cfg, writeKeys(b, benchAppID), fmt.Sprintf("-ingest.credits=%d", benchCredits))

	// Each connection resends the same length-prefixed frames every
	// iteration, with fresh event ids.
	type conn struct {
		f       *frameConn
		frames  [][]byte
		offsets [][]int // where each event id starts in frames[i]
	}
	conns := make([]*conn, benchConns)
	for i := range conns {
		cn := &conn{f: dialFrames(b, c.TCP)}
		if w := cn.f.hello(b, c.keys.key[benchAppID]); w.GetCredits() != benchCredits {
			b.Fatalf("Welcome gives %d credits, want %d", w.GetCredits(), benchCredits)
		}
		for j := range benchPerConn {
			events := make([]*eventv1.Event, benchBatch)
			for k := range events {
				events[k] = benchEvent((i*benchPerConn+j)*benchBatch + k)
			}
			frame, err := proto.Marshal(batchFrame(uint64(j+1), events))
			if err != nil {
				b.Fatal(err)
			}
			frame = prefixed(frame)
			var offs []int
			for _, e := range events {
				off := bytes.Index(frame, []byte(e.GetEventId()))
				if off < 0 {
					b.Fatal("event id not found in its frame")
				}
				offs = append(offs, off)
			}
			cn.frames, cn.offsets = append(cn.frames, frame), append(cn.offsets, offs)
		}
		conns[i] = cn
	}
	var ids idRewriter
	iters := 0
	for b.Loop() {
		iters++
		var wg sync.WaitGroup
		errs := make(chan error, benchConns)
		for _, cn := range conns {
			_ = cn.f.conn.SetDeadline(time.Now().Add(waitLimit))
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- streamFrames(cn.f, cn.frames, cn.offsets, &ids)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(iters*benchPerIter)/b.Elapsed().Seconds(), "events/s")
}

// streamFrames sends every frame through the credit window and checks that
// each ack accepts every event of its batch.
func streamFrames(f *frameConn, frames [][]byte, offsets [][]int, ids *idRewriter) error {
	sent, acked := 0, 0
	for acked < len(frames) {
		for sent < len(frames) && sent-acked < benchCredits {
			ids.rewrite(frames[sent], offsets[sent])
			if err := f.writeRaw(frames[sent]); err != nil {
				return err
			}
			sent++
		}
		m, err := f.recv()
		if err != nil {
			return err
		}
		a := m.GetAck()
		if a == nil || len(a.GetResults()) != benchBatch {
			return fmt.Errorf("got %v, want an Ack of %d results", m, benchBatch)
		}
		for _, r := range a.GetResults() {
			if r.GetStatus() != ingestv1.EventStatus_EVENT_STATUS_ACCEPTED {
				return fmt.Errorf("batch %d: %v", a.GetSeq(), r)
			}
		}
		acked++
	}
	return nil
}

func BenchmarkKafkaGoDirect(b *testing.B) {
	cfg := benchKafka(b)
	// The collector's producer settings (internal/kafka.NewProducer).
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.BrokerList()...),
		Topic:        cfg.Topic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: cfg.BatchTimeout,
		BatchSize:    1000,
		BatchBytes:   8 << 20,
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  3,
		Compression:  kafkago.Lz4,
		Transport:    &kafkago.Transport{DialTimeout: 5 * time.Second, MetadataTTL: 5 * time.Second},
	}
	if cfg.Compression != "lz4" {
		b.Fatalf("kafkatest uses compression %q; this baseline assumes lz4", cfg.Compression)
	}
	b.Cleanup(func() { w.Close() })

	// The same events, serialized as the collector writes them (with the
	// server's receive time), in batches of the same size.
	batches := make([][]kafkago.Message, benchConns*benchPerConn)
	now := time.Now().UnixMilli()
	for j := range batches {
		batches[j] = make([]kafkago.Message, benchBatch)
		for k := range batches[j] {
			e := benchEvent(j*benchBatch + k)
			e.SentAtMs, e.ReceivedAtMs = now, now
			v, err := proto.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			batches[j][k] = kafkago.Message{Key: []byte(e.GetDeviceId()), Value: v, Headers: []kafkago.Header{{Key: kafka.HeaderAppID, Value: []byte(e.GetAppId())}}}
		}
	}
	iters := 0
	for b.Loop() {
		iters++
		// As many synchronous produce calls in flight as the collector can
		// have: connections x credits.
		work := make(chan []kafkago.Message, len(batches))
		for _, batch := range batches {
			work <- batch
		}
		close(work)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for range benchConns * benchCredits {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for batch := range work {
					if err := w.WriteMessages(b.Context(), batch...); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(iters*benchPerIter)/b.Elapsed().Seconds(), "events/s")
}
