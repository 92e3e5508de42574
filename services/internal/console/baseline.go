package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/bearer"
	"causality.dev/services/internal/kafka"
)

// detectorClient calls the detector's GetBaseline with a bearer token.
type detectorClient struct {
	client detectv1.DetectorServiceClient
	token  string
}

func (d *detectorClient) GetBaseline(ctx context.Context, req *detectv1.GetBaselineRequest) (*detectv1.GetBaselineResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.token)
	return d.client.GetBaseline(ctx, req)
}

// DialDetector returns a Baseliner for cfg's detector (nil, with a no-op
// close, when cfg names none). The connection is made lazily.
func DialDetector(cfg Config) (Baseliner, func() error, error) {
	if cfg.DetectorAddr == "" {
		return nil, func() error { return nil }, nil
	}
	token, err := readToken(cfg.DetectorTokenFile)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(cfg.DetectorAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("-console.detector-addr: %w", err)
	}
	return &detectorClient{client: detectv1.NewDetectorServiceClient(conn), token: token}, conn.Close, nil
}

// readToken returns the first token of file (the bearer tokens-file
// format, as the detector reads it).
func readToken(file string) (string, error) {
	if file == "" {
		return "", errors.New("-console.detector-token-file is required with -console.detector-addr (the detector wants a token)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-console.detector-token-file: %w", err)
	}
	tokens, err := bearer.Parse(b)
	if err != nil {
		return "", fmt.Errorf("-console.detector-token-file %s: %w", file, err)
	}
	if len(tokens) == 0 {
		return "", fmt.Errorf("-console.detector-token-file %s holds no token", file)
	}
	return tokens[0], nil
}

// cohortParams reads the cohort of a request's query.
func cohortParams(r *http.Request) (*detectv1.Cohort, error) {
	q := r.URL.Query()
	c := &detectv1.Cohort{AppId: q.Get("app_id"), AppVersion: q.Get("app_version"), BuildNumber: q.Get("build_number")}
	if c.AppId == "" {
		return nil, errors.New("app_id is required")
	}
	if p := q.Get("platform"); p != "" {
		v, ok := platformValue(p)
		if !ok {
			return nil, fmt.Errorf("platform %q: want e.g. PLATFORM_ANDROID or android", p)
		}
		c.Platform = v
	}
	return c, nil
}

func platformValue(s string) (eventv1.Platform, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		_, ok := eventv1.Platform_name[int32(n)]
		return eventv1.Platform(n), ok
	}
	s = strings.ToUpper(s)
	if !strings.HasPrefix(s, "PLATFORM_") {
		s = "PLATFORM_" + s
	}
	v, ok := eventv1.Platform_value[s]
	return eventv1.Platform(v), ok
}

// handleBaseline proxies GetBaseline: GET /console/api/baseline?app_id=&
// app_version=&build_number=&platform=&window_ms= answers the
// GetBaselineResponse in protobuf JSON (field names as in the proto).
func (c *Console) handleBaseline(w http.ResponseWriter, r *http.Request) {
	if c.baselines == nil {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "no detector configured (-console.detector-addr)")
		return
	}
	cohort, err := cohortParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
		return
	}
	windowMs, err := intParam(r.URL.Query().Get("window_ms"), 0, 0, 1<<40)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "window_ms: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.baselines.GetBaseline(ctx, &detectv1.GetBaselineRequest{Cohort: cohort, WindowMs: int64(windowMs)})
	if err != nil {
		st := status.Convert(err)
		code := http.StatusBadGateway
		switch st.Code() {
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.Unavailable, codes.DeadlineExceeded:
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, codeName(st.Code()), "detector: "+st.Message())
		return
	}
	b, err := jsonOptions.Marshal(resp)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "INTERNAL", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// cohortWindow is what a cohort did in the scanned window.
type cohortWindow struct {
	AppID       string           `json:"app_id"`
	AppVersion  string           `json:"app_version"`
	BuildNumber string           `json:"build_number"`
	Platform    string           `json:"platform"`
	Events      int64            `json:"events"`
	Devices     int              `json:"devices"`
	EventMix    map[string]int64 `json:"event_mix"` // counts by event type
	devices     map[string]bool
}

// cohortsResponse answers /console/api/cohorts.
type cohortsResponse struct {
	AppID     string          `json:"app_id"`
	FromMs    int64           `json:"from_ms"`
	ToMs      int64           `json:"to_ms"`
	Scanned   int64           `json:"scanned"`
	Truncated bool            `json:"truncated"`
	Cohorts   []*cohortWindow `json:"cohorts"`
}

var errScanFull = errors.New("scan limit reached")

// handleCohorts reads the events topic from window_ms ago (broker time,
// default one minute) to its end and answers each cohort of the app with
// its events, devices and event-type counts: the current window the
// baselines page compares with the detector's baseline.
func (c *Console) handleCohorts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app_id")
	if app == "" {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "app_id is required")
		return
	}
	windowMs, err := intParam(q.Get("window_ms"), 60_000, 1000, 24*3600_000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "window_ms: "+err.Error())
		return
	}
	now := time.Now()
	res := &cohortsResponse{AppID: app, FromMs: now.UnixMilli() - int64(windowMs), ToMs: now.UnixMilli(), Cohorts: []*cohortWindow{}}
	byKey := map[string]*cohortWindow{}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	tc := kafka.TailConfig{Topic: c.eventsTopic, Since: now.Add(-time.Duration(windowMs) * time.Millisecond), ToEnd: true}
	err = c.source(ctx, tc, func(int) {}, func(m kafka.Message) error {
		if res.Scanned >= int64(c.cfg.MaxScan) {
			return errScanFull
		}
		res.Scanned++
		if m.AppID != "" && m.AppID != app {
			return nil
		}
		e := &eventv1.Event{}
		if proto.Unmarshal(m.Value, e) != nil || e.GetAppId() != app {
			return nil
		}
		d := e.GetDeviceContext()
		key := d.GetAppVersion() + "\x00" + d.GetBuildNumber() + "\x00" + d.GetPlatform().String()
		cw := byKey[key]
		if cw == nil {
			cw = &cohortWindow{AppID: app, AppVersion: d.GetAppVersion(), BuildNumber: d.GetBuildNumber(), Platform: d.GetPlatform().String(),
				EventMix: map[string]int64{}, devices: map[string]bool{}}
			byKey[key] = cw
			res.Cohorts = append(res.Cohorts, cw)
		}
		cw.Events++
		cw.EventMix[eventType(e)]++
		if len(cw.devices) < 100_000 {
			cw.devices[e.GetDeviceId()] = true
		}
		return nil
	})
	switch {
	case errors.Is(err, errScanFull):
		res.Truncated = true
	case errors.Is(err, kafka.ErrNoTopic):
	case err != nil:
		writeError(w, http.StatusBadGateway, "UNAVAILABLE", "read "+c.eventsTopic+": "+err.Error())
		return
	case ctx.Err() != nil && r.Context().Err() == nil:
		res.Truncated = true // the scan took too long: what was read
	}
	for _, cw := range res.Cohorts {
		cw.Devices = len(cw.devices)
	}
	slices.SortFunc(res.Cohorts, func(a, b *cohortWindow) int {
		return cmp.Or(cmp.Compare(b.Events, a.Events), strings.Compare(a.AppVersion, b.AppVersion), strings.Compare(a.BuildNumber, b.BuildNumber), strings.Compare(a.Platform, b.Platform))
	})
	writeJSON(w, http.StatusOK, res)
}

// codeName is the canonical name of a gRPC code ("NOT_FOUND"), as the
// admin API's errors carry it.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}
