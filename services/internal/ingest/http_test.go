package ingest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

func TestHTTPAnswers(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	const id = "01a21096-8d4b-78f9-b858-5e9e0665c39c"
	tests := []struct {
		name, path, key, ctype, body string
		code                         int
		want                         string // substring of the body
	}{
		{"prototype id is the event id", "/v1/events/ingest", keyA, "application/json",
			`{"event": {"id": "` + id + `", "appId": "app-a", "deviceId": "d1", "screenView": {"screenName": "Home"}}}`,
			200, `"eventId":"` + id + `"`},
		{"prototype id in a batch", "/v1/events/batch", keyA, "application/json",
			`{"events": [{"id": "01a21096-8d4b-78f9-b858-5e9e0665c39d", "appId": "app-a", "deviceId": "d1", "buttonTap": {"buttonId": "b"}}]}`,
			200, `"eventId":"01a21096-8d4b-78f9-b858-5e9e0665c39d"`},
		{"other unknown fields are refused", "/v1/events/ingest", keyA, "application/json",
			`{"event": {"appId": "app-a", "deviceId": "d1", "colour": "red", "screenView": {"screenName": "Home"}}}`,
			400, `unknown field`},
		{"invalid event is 400 with the reason", "/v1/events/ingest", keyA, "application/json",
			`{"event": {"appId": "app-a", "screenView": {"screenName": "Home"}}}`,
			400, `"status":"invalid"`},
		{"missing key", "/v1/events/ingest", "", "application/json",
			`{"event": {"appId": "app-a", "deviceId": "d1", "screenView": {"screenName": "Home"}}}`,
			401, `X-API-Key`},
		{"wrong content type", "/v1/events/ingest", keyA, "text/plain", `hello`, 415, `content type`},
		{"malformed json", "/v1/events/batch", keyA, "application/json", `{"events": [`, 400, `decode body`},
		{"empty batch", "/v1/events/batch", keyA, "application/json", `{"events": []}`, 400, `1 to`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, "http://"+ts.httpAddr+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.ctype)
			if tc.key != "" {
				req.Header.Set("X-API-Key", tc.key)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Fatalf("got %d %s; want %d containing %q", res.StatusCode, b, tc.code, tc.want)
			}
			if res.StatusCode == 200 {
				var out ingestv1.BatchIngestResponse
				if tc.path == "/v1/events/batch" && protojson.Unmarshal(b, &out) != nil {
					t.Fatalf("batch response does not parse: %s", b)
				}
			}
		})
	}
	if got := pub.ids(); len(got) != 2 {
		t.Fatalf("published %v, want the two accepted events", got)
	}
}

func TestSessionThrottlesBeforeRateLimitedAck(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), func(c *Config) { c.RateLimit = 1 })
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	c.batch(1, liveEvent(1), liveEvent(2), liveEvent(3))
	f := c.recv()
	th := f.GetThrottle()
	if th == nil || th.GetDelayMs() == 0 {
		t.Fatalf("first frame %v, want Throttle with a delay", f)
	}
	a := c.ack()
	wantStatuses(t, a, "accepted", "rate_limited", "rate_limited")
	if got := a.GetResults()[2].GetRetryAfterMs(); got > th.GetDelayMs() {
		t.Fatalf("throttle %d ms is shorter than a retry_after of %d ms", th.GetDelayMs(), got)
	}
}
