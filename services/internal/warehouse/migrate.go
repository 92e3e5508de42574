package warehouse

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered file of migrations/: statements separated by a
// line ending with ';', each idempotent (IF NOT EXISTS; an ALTER TABLE ...
// ADD COLUMN whose column exists counts as applied), with {database}
// standing for the target database. Names inside views and materialized
// views are qualified, because a plain view resolves unqualified names in
// the database of whoever queries it.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// Migrations returns the embedded migrations in order, rendered for
// database.
func Migrations(database string) ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", name)
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, err
		}
		m := Migration{Version: v, Name: strings.TrimSuffix(name, ".sql")}
		for _, s := range SplitStatements(string(b)) {
			m.Statements = append(m.Statements, strings.ReplaceAll(s, "{database}", quoteIdent(database)))
		}
		if len(out) > 0 && out[len(out)-1].Version == v {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[len(out)-1].Name, m.Name, v)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// SplitStatements splits SQL text into statements at lines ending with ';'.
// Lines starting with "--" are comments and are dropped; the ';' is
// dropped too.
func SplitStatements(sql string) []string {
	var out []string
	var cur []string
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--") || (t == "" && len(cur) == 0) {
			continue
		}
		cur = append(cur, strings.TrimRight(line, " \t\r"))
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(strings.Join(cur, "\n")), ";"))
			if s != "" {
				out = append(out, s)
			}
			cur = nil
		}
	}
	if s := strings.TrimSpace(strings.Join(cur, "\n")); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrate creates cfg.Database when missing and applies the migrations not
// yet recorded in its schema_migrations table, in order. It is safe to run
// at every start and from several processes at once: every statement is
// idempotent, and a version recorded twice collapses (ReplacingMergeTree).
func Migrate(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	c, err := open(ctx, cfg, "")
	if err != nil {
		return err
	}
	defer c.Close()
	db := quoteIdent(cfg.Database)
	for _, q := range BootstrapStatements(cfg.Database) {
		if err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrate %s: %w", cfg.Database, err)
		}
	}
	applied, err := c.Query(ctx, "SELECT DISTINCT version FROM "+db+".schema_migrations", 0)
	if err != nil {
		return fmt.Errorf("migrate %s: read schema_migrations: %w", cfg.Database, err)
	}
	done := map[string]bool{}
	for _, r := range applied.Rows {
		done[r[0]] = true
	}
	ms, err := Migrations(cfg.Database)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if done[strconv.Itoa(m.Version)] {
			continue
		}
		for _, s := range m.Statements {
			if err := c.Exec(ctx, s); err != nil && !columnExists(s, err) {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
		}
		b, err := c.conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
		if err != nil {
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		if err := b.Append(uint32(m.Version), m.Name, time.Now()); err != nil {
			b.Abort()
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// columnExists reports whether err says an ALTER TABLE ... ADD COLUMN found
// its column already there: another process applied the migration first
// (18.16 has no ADD COLUMN IF NOT EXISTS; it answers ILLEGAL_COLUMN, current
// servers DUPLICATE_COLUMN).
func columnExists(stmt string, err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == codeIllegalColumn || ex.Code == codeDuplicateColumn) && strings.Contains(ex.Message, "already exists") &&
		strings.HasPrefix(strings.ToUpper(strings.TrimSpace(stmt)), "ALTER TABLE")
}

// BootstrapStatements create the database and its schema_migrations table;
// Migrate runs them before the migrations.
func BootstrapStatements(database string) []string {
	db := quoteIdent(database)
	return []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		"CREATE TABLE IF NOT EXISTS " + db + ".schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = ReplacingMergeTree ORDER BY version",
	}
}

// quoteIdent quotes a validated identifier for ClickHouse.
func quoteIdent(s string) string { return "`" + s + "`" }
