// Package warehouse is the only importer of clickhouse-go. Events flow in
// through Writer.Write (one native batch insert per call into the events
// table), the detector's anomalies through AnomalyWriter.Write (into the
// anomalies table, once per anomaly id); SQL flows through Client.Query (the analysts' prompt, tests). The
// schema is a list of numbered migrations embedded in the binary and applied
// by Migrate.
//
// It speaks the native protocol with clickhouse-go v2.25.0, the last version
// that can insert into ClickHouse 18.16 (later ones send INSERT ... FORMAT
// Native, which 18.16 answers with an empty header); v2.25 also works with
// current servers.
package warehouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrNoDatabase is returned by Open when the configured database does not
// exist yet (the sink creates it when it applies the migrations).
var ErrNoDatabase = errors.New("database does not exist")

// Client is a pool of native connections to one database.
type Client struct {
	conn driver.Conn
	cfg  Config
}

// Open connects to cfg.Database and checks the server answers.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := open(ctx, cfg, cfg.Database)
	if err != nil {
		var ex *clickhouse.Exception
		if errors.As(err, &ex) && ex.Code == codeUnknownDatabase {
			return nil, fmt.Errorf("clickhouse at %s: %w: %s (run `causality sink` once, it creates it, or set -clickhouse.database)", cfg.Addr, ErrNoDatabase, cfg.Database)
		}
		return nil, err
	}
	return c, nil
}

// ClickHouse error codes the package branches on.
const (
	codeUnknownDatabase = 81
	codeDuplicateColumn = 15
	codeIllegalColumn   = 44
)

func open(ctx context.Context, cfg Config, database string) (*Client, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:            []string{cfg.Addr},
		Auth:            clickhouse.Auth{Database: database, Username: cfg.Username, Password: cfg.Password},
		DialTimeout:     cfg.DialTimeout,
		ReadTimeout:     cfg.ReadTimeout,
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
		ClientInfo:      clickhouse.ClientInfo{Products: []struct{ Name, Version string }{{"causality", "1"}}},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse at %s: %w", cfg.Addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout+cfg.ReadTimeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse at %s: %w", cfg.Addr, err)
	}
	return &Client{conn: conn, cfg: cfg}, nil
}

// Close closes the connections.
func (c *Client) Close() error { return c.conn.Close() }

// Database is the database the client is connected to.
func (c *Client) Database() string { return c.cfg.Database }

// Ping checks the server answers.
func (c *Client) Ping(ctx context.Context) error {
	if err := c.conn.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse at %s: %w", c.cfg.Addr, err)
	}
	return nil
}

// Exec runs one statement that returns no rows (DDL, INSERT ... SELECT).
// ClickHouse 18.16 waits forever for data after INSERT ... VALUES sent
// this way: use a Writer or clickhouse-client for those.
func (c *Client) Exec(ctx context.Context, query string) error {
	if err := c.conn.Exec(ctx, query); err != nil {
		return fmt.Errorf("%s: %w", abbreviate(query), err)
	}
	return nil
}

// Result is a query result with every value formatted as text.
type Result struct {
	Columns   []string
	Types     []string
	Rows      [][]string
	Truncated bool // more than maxRows rows were returned
}

// Query runs one statement and returns at most maxRows rows (0: no limit),
// each value formatted as clickhouse-client would print it.
//
// Statements that return no rows (CREATE, DROP, INSERT ... SELECT, ...) run
// as Exec and give a Result without columns.
func (c *Client) Query(ctx context.Context, query string, maxRows int) (*Result, error) {
	if !returnsRows(query) {
		if err := c.conn.Exec(ctx, query); err != nil {
			return nil, err
		}
		return &Result{}, nil
	}
	rows, err := c.conn.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &Result{Columns: rows.Columns()}
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for i, t := range types {
		res.Types = append(res.Types, t.DatabaseTypeName())
		dest[i] = reflect.New(t.ScanType()).Interface()
	}
	for rows.Next() {
		if maxRows > 0 && len(res.Rows) == maxRows {
			res.Truncated = true
			break
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			row[i] = format(reflect.ValueOf(d).Elem(), res.Types[i], false)
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

var rowsKeyword = regexp.MustCompile(`(?i)^\s*(\(\s*)*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN)\b`)

// returnsRows reports whether the statement answers with rows.
func returnsRows(q string) bool {
	for {
		t := strings.TrimSpace(q)
		if !strings.HasPrefix(t, "--") {
			return rowsKeyword.MatchString(t)
		}
		_, q, _ = strings.Cut(t, "\n")
	}
}

// format prints v like clickhouse-client's TSV: dates as dates, arrays as
// [..] with quoted strings inside.
func format(v reflect.Value, typ string, nested bool) string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return "NULL"
		}
		v = v.Elem()
	}
	if strings.HasPrefix(typ, "Array(") && (v.Kind() == reflect.Slice || v.Kind() == reflect.Array) {
		inner := strings.TrimSuffix(strings.TrimPrefix(typ, "Array("), ")")
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = format(v.Index(i), inner, true)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	switch x := v.Interface().(type) {
	case time.Time:
		if strings.HasPrefix(strings.TrimPrefix(typ, "Nullable("), "Date") && !strings.Contains(typ, "DateTime") {
			return x.Format(time.DateOnly)
		}
		return x.Format(time.DateTime)
	case string:
		if nested {
			return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(x) + "'"
		}
		return x
	case []byte:
		return string(x)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// errorReason maps an insert or query error to a bounded label value.
func errorReason(err error) string {
	var ex *clickhouse.Exception
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ex):
		return "server"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &nerr), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, clickhouse.ErrAcquireConnTimeout):
		return "connection"
	}
	return "other"
}

func abbreviate(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 80 {
		return q[:77] + "..."
	}
	return q
}

// Unreachable reports whether err means the server could not be reached or
// did not answer in time (worth retrying), as opposed to an error the
// server returned.
func Unreachable(err error) bool {
	switch errorReason(err) {
	case "refused", "connection", "timeout":
		return true
	}
	return false
}
