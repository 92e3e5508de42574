package warehouse

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
)

// anomalyColumns are the columns of the anomalies table an AnomalyWriter
// fills (migrations 003 and 004), in insert order.
var anomalyColumns = []string{
	"id", "kind", "app_id", "cohort", "device_id", "window_start", "window_end", "score", "threshold",
	"baseline", "evidence", "detected_at", "devices", "summary", "rule",
}

// AnomalyWriter stores the detector's anomalies in the anomalies table,
// one row per anomaly id. Anomalies flow in through Write, which has the
// shape of a detector output (detect.Output.Write).
//
// It does not apply migrations: the table belongs to the sink, which
// creates it. The connection is opened at the first Write and again after
// one failed, so a detector starts while ClickHouse is down or before any
// sink ran; its writes fail until then, and the detector retries them.
type AnomalyWriter struct {
	cfg Config

	mu     sync.Mutex // guards client
	client *Client
}

// NewAnomalyWriter returns a writer to cfg's database; it connects at the
// first Write.
func NewAnomalyWriter(cfg Config) (*AnomalyWriter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &AnomalyWriter{cfg: cfg}, nil
}

// Close closes the connection, if one was opened.
func (w *AnomalyWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.client == nil {
		return nil
	}
	err := w.client.Close()
	w.client = nil
	return err
}

func (w *AnomalyWriter) connect(ctx context.Context) (*Client, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.client != nil {
		return w.client, nil
	}
	c, err := Open(ctx, w.cfg)
	if err != nil {
		return nil, err
	}
	w.client = c
	return c, nil
}

// Write inserts the anomalies whose id is not in the table yet, as one
// batch, and returns once ClickHouse acknowledged it. A write retried
// after an error that came after the insert (a timeout) finds its rows
// and adds nothing; two writers racing on one id may both insert it, and
// the copies collapse in the ReplacingMergeTree (read with FINAL).
func (w *AnomalyWriter) Write(ctx context.Context, as []*detectv1.Anomaly) error {
	if len(as) == 0 {
		return nil
	}
	c, err := w.connect(ctx)
	if err != nil {
		return fmt.Errorf("anomalies to clickhouse: %w", err)
	}
	stored, err := storedAnomalies(ctx, c, as)
	if err != nil {
		return fmt.Errorf("anomalies to clickhouse at %s: find stored ids: %w", w.cfg.Addr, err)
	}
	batch, err := c.conn.PrepareBatch(ctx, "INSERT INTO "+quoteIdent(c.Database())+".anomalies ("+strings.Join(anomalyColumns, ", ")+")")
	if err != nil {
		return fmt.Errorf("anomalies to clickhouse at %s: %w", w.cfg.Addr, err)
	}
	n := 0
	for _, a := range as {
		if stored[a.GetId()] {
			continue
		}
		stored[a.GetId()] = true // once per batch too
		n++
		if err := batch.Append(anomalyRow(a)...); err != nil {
			batch.Abort()
			return fmt.Errorf("anomaly %s to clickhouse: %w", a.GetId(), err)
		}
	}
	if n == 0 {
		batch.Abort()
		return nil
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d anomalies into clickhouse at %s: %w", n, w.cfg.Addr, err)
	}
	return nil
}

// storedAnomalies returns the ids of as already in the table (times are
// clamped into the DateTime range as in the events table, dateTime). The window
// range lets ClickHouse skip the other months and most of the index.
func storedAnomalies(ctx context.Context, c *Client, as []*detectv1.Anomaly) (map[string]bool, error) {
	ids := make([]string, 0, len(as))
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, a := range as {
		ids = append(ids, a.GetId())
		s := dateTime(a.GetWindowStartMs()).Unix()
		lo, hi = min(lo, s), max(hi, s)
	}
	rows, err := c.conn.Query(ctx, "SELECT DISTINCT id FROM "+quoteIdent(c.Database())+".anomalies"+
		" WHERE window_start >= toDateTime("+strconv.FormatInt(lo, 10)+") AND window_start <= toDateTime("+strconv.FormatInt(hi, 10)+")"+
		" AND has(?, id)", ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		stored[id] = true
	}
	return stored, rows.Err()
}

// anomalyRow is a's values in the order of anomalyColumns.
func anomalyRow(a *detectv1.Anomaly) []any {
	devices := a.GetDevices()
	if devices == nil {
		devices = []string{}
	}
	return []any{
		a.GetId(), AnomalyKind(a.GetKind()), a.GetAppId(), CohortLabel(a.GetCohort()), a.GetDeviceId(),
		dateTime(a.GetWindowStartMs()), dateTime(a.GetWindowEndMs()), a.GetScore(), a.GetThreshold(),
		baselineJSON(a.GetBaseline()), evidenceJSON(a.GetEvidence()), dateTime(a.GetDetectedAtMs()),
		devices, a.GetSummary(), a.GetRule(),
	}
}

// AnomalyKind is the kind column: the enum name in lower case without its
// prefix, e.g. "funnel_bypass" (what detect.KindLabel gives).
func AnomalyKind(k detectv1.AnomalyKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "ANOMALY_KIND_"))
}

// CohortLabel is the cohort column, the cohort without its app, e.g.
// "app_version=2.4.1,build_number=2410,platform=android" (what
// detect.CohortLabel gives).
func CohortLabel(c *detectv1.Cohort) string {
	platform := strings.ToLower(strings.TrimPrefix(c.GetPlatform().String(), "PLATFORM_"))
	return "app_version=" + c.GetAppVersion() + ",build_number=" + c.GetBuildNumber() + ",platform=" + platform
}

// jsonFloat is a float that encodes NaN and infinities as null.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// baselineJSON is the baseline column: the BaselineSummary with its proto
// field names, every field present, compact (visitParamExtract* reads it).
func baselineJSON(b *detectv1.BaselineSummary) string {
	if b == nil {
		return "{}"
	}
	out, _ := json.Marshal(struct {
		Source   string    `json:"source"`
		Windows  int64     `json:"windows"`
		Expected jsonFloat `json:"expected"`
		Spread   jsonFloat `json:"spread"`
		Observed jsonFloat `json:"observed"`
		Hour     int32     `json:"hour"`
	}{b.GetSource(), b.GetWindows(), jsonFloat(b.GetExpected()), jsonFloat(b.GetSpread()), jsonFloat(b.GetObserved()), b.GetHour()})
	return string(out)
}

// evidenceJSON is the evidence column: a JSON array of the Evidence items
// with their proto field names, largest contribution first.
func evidenceJSON(es []*detectv1.Evidence) string {
	type item struct {
		Key          string    `json:"key"`
		Observed     jsonFloat `json:"observed"`
		Expected     jsonFloat `json:"expected"`
		Contribution jsonFloat `json:"contribution"`
	}
	items := make([]item, 0, len(es))
	for _, e := range es {
		items = append(items, item{e.GetKey(), jsonFloat(e.GetObserved()), jsonFloat(e.GetExpected()), jsonFloat(e.GetContribution())})
	}
	out, _ := json.Marshal(items)
	return string(out)
}
