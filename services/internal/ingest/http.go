package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// MaxHTTPBody bounds one HTTP request body.
const MaxHTTPBody = 5 << 20

const contentTypeProto = "application/x-protobuf"

// idempotencyNS namespaces event ids derived from an idempotency key.
var idempotencyNS = uuid.MustParse("6f1c3b3e-9a57-4d0e-8f3a-43a1c8d2e0b7")

// Handler serves the HTTP API (the prototype's JSON, and binary protobuf)
// and the WebSocket stream. ctx is the shutdown context.
func (s *Server) Handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events/ingest", s.handleIngest)
	mux.HandleFunc("POST /v1/events/batch", s.handleBatch)
	mux.HandleFunc("GET /v1/stream", func(w http.ResponseWriter, r *http.Request) { s.serveWS(ctx, w, r) })
	for _, rt := range s.routes {
		mux.Handle(rt.pattern, rt.h)
	}
	return mux
}

// httpError is an answer for the whole request.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	req := &ingestv1.IngestEventRequest{}
	isProto, err := s.decode(w, r, req)
	if err != nil {
		s.writeError(w, isProto, err)
		return
	}
	if req.GetEvent() == nil {
		s.writeError(w, isProto, &httpError{http.StatusBadRequest, `"event" is required`})
		return
	}
	results, err := s.ingestHTTP(r, []*eventv1.Event{req.GetEvent()})
	if err != nil {
		s.writeError(w, isProto, err)
		return
	}
	res := results[0]
	code := http.StatusOK
	switch res.GetStatus() {
	case ingestv1.EventStatus_EVENT_STATUS_INVALID:
		code = http.StatusBadRequest
	case ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED:
		code = http.StatusTooManyRequests
	case ingestv1.EventStatus_EVENT_STATUS_RETRY:
		code = http.StatusServiceUnavailable
	}
	if res.GetRetryAfterMs() > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(res.GetRetryAfterMs()+999)/1000))
	}
	s.write(w, isProto, code, &ingestv1.IngestEventResponse{EventId: res.GetEventId(), Status: statusLabel(res.GetStatus()), Error: resultError(res)}, false)
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	req := &ingestv1.BatchIngestRequest{}
	isProto, err := s.decode(w, r, req)
	if err != nil {
		s.writeError(w, isProto, err)
		return
	}
	if n := len(req.GetEvents()); n == 0 || n > s.cfg.MaxBatchEvents {
		s.writeError(w, isProto, &httpError{http.StatusBadRequest, fmt.Sprintf(`"events" must hold 1 to %d events, got %d`, s.cfg.MaxBatchEvents, n)})
		return
	}
	results, err := s.ingestHTTP(r, req.GetEvents())
	if err != nil {
		s.writeError(w, isProto, err)
		return
	}
	resp := &ingestv1.BatchIngestResponse{}
	var retryAfter uint32
	for i, res := range results {
		switch res.GetStatus() {
		case ingestv1.EventStatus_EVENT_STATUS_ACCEPTED, ingestv1.EventStatus_EVENT_STATUS_DUPLICATE:
			resp.AcceptedCount++
		default:
			resp.RejectedCount++
		}
		retryAfter = max(retryAfter, res.GetRetryAfterMs())
		resp.Results = append(resp.Results, &ingestv1.BatchEventResult{
			Index: int32(i), EventId: res.GetEventId(), Status: statusLabel(res.GetStatus()),
			Error: resultError(res), Reason: reasonLabel(res.GetReason()), RetryAfterMs: res.GetRetryAfterMs(),
		})
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter+999)/1000))
	}
	s.write(w, isProto, http.StatusOK, resp, true)
}

// ingestHTTP authenticates the request and runs the pipeline. Events
// without an id get one: derived from their idempotency key when they have
// one (so retries collapse), else a fresh UUIDv7.
func (s *Server) ingestHTTP(r *http.Request, events []*eventv1.Event) ([]*ingestv1.EventResult, error) {
	key := r.Header.Get("X-API-Key")
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && key == "" {
		key = v
	}
	var app string
	if key != "" || !s.cfg.AllowAnonymousHTTP {
		var err error
		if app, err = s.keys.Lookup(key); err != nil {
			code := http.StatusUnauthorized
			if errors.Is(err, ErrRevokedKey) {
				code = http.StatusForbidden
			}
			if key == "" {
				err = errors.New("missing ingest key: send it in the X-API-Key header")
			}
			return nil, &httpError{code, err.Error()}
		}
	}
	for _, e := range events {
		if e.GetEventId() != "" {
			continue
		}
		if k := e.GetIdempotencyKey(); k != "" {
			appID := e.GetAppId()
			if appID == "" {
				appID = app // the pipeline fills it the same way: keys stay per app
			}
			e.EventId = uuid.NewSHA1(idempotencyNS, []byte(appID+"\x00"+k)).String()
		} else {
			e.EventId = uuid.Must(uuid.NewV7()).String()
		}
	}
	ack := s.pipe.ingest(r.Context(), TransportHTTP, app, &ingestv1.Batch{Events: events})
	return ack.GetResults(), nil
}

// decode reads a JSON or protobuf body into m.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, m proto.Message) (isProto bool, err error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case contentTypeProto, "application/protobuf":
		isProto = true
	case "application/json", "":
	default:
		return false, &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: use application/json or %s", mt, contentTypeProto)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxHTTPBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return isProto, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxHTTPBody)}
		}
		return isProto, &httpError{http.StatusBadRequest, "read body: " + err.Error()}
	}
	if isProto {
		err = proto.Unmarshal(body, m)
	} else {
		if bytes.Contains(body, []byte(`"id"`)) {
			body = renamePrototypeID(body)
		}
		err = protojson.Unmarshal(body, m)
	}
	if err != nil {
		return isProto, &httpError{http.StatusBadRequest, "decode body: " + err.Error()}
	}
	return isProto, nil
}

func (s *Server) write(w http.ResponseWriter, isProto bool, code int, m proto.Message, emitZero bool) {
	var b []byte
	if isProto {
		w.Header().Set("Content-Type", contentTypeProto)
		b, _ = proto.Marshal(m)
	} else {
		w.Header().Set("Content-Type", "application/json")
		b, _ = protojson.MarshalOptions{EmitUnpopulated: emitZero}.Marshal(m)
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError answers a failed request; errors are JSON {"error": "..."}
// (or an IngestEventResponse with status "error" for protobuf clients).
func (s *Server) writeError(w http.ResponseWriter, isProto bool, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	s.metrics.frames.WithLabelValues(TransportHTTP, "rejected").Inc()
	s.write(w, isProto, code, &ingestv1.IngestEventResponse{Status: "error", Error: err.Error()}, false)
}

func resultError(r *ingestv1.EventResult) string {
	switch r.GetStatus() {
	case ingestv1.EventStatus_EVENT_STATUS_INVALID:
		return r.GetDetail()
	case ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED:
		return "rate limited: retry later"
	case ingestv1.EventStatus_EVENT_STATUS_RETRY:
		return "temporarily unavailable: retry later"
	}
	return ""
}

// renamePrototypeID accepts the prototype's envelope field "id" as "eventId"
// in {"event": {...}} and {"events": [...]} bodies. A body it cannot parse is
// returned unchanged for protojson to report.
func renamePrototypeID(body []byte) []byte {
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return body
	}
	rename := func(raw json.RawMessage) json.RawMessage {
		var ev map[string]json.RawMessage
		if json.Unmarshal(raw, &ev) != nil {
			return raw
		}
		id, ok := ev["id"]
		if !ok {
			return raw
		}
		delete(ev, "id")
		if _, set := ev["eventId"]; !set {
			if _, set := ev["event_id"]; !set {
				ev["eventId"] = id
			}
		}
		out, _ := json.Marshal(ev)
		return out
	}
	if raw, ok := req["event"]; ok {
		req["event"] = rename(raw)
	}
	if raw, ok := req["events"]; ok {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) == nil {
			for i := range list {
				list[i] = rename(list[i])
			}
			req["events"], _ = json.Marshal(list)
		}
	}
	out, err := json.Marshal(req)
	if err != nil {
		return body
	}
	return out
}
