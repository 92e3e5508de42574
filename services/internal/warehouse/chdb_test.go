package warehouse_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"causality.dev/services/internal/warehouse"
)

// TestSchemaOnChDB runs the migrations and every query of docs/queries.sql
// on a current ClickHouse (chDB, in-process) with empty tables. It needs
// no server, only `python3 -m pip install chdb`. TestQueries compares the
// results on real data when a test server is there too.
func TestSchemaOnChDB(t *testing.T) {
	if err := exec.Command("python3", "-c", "import chdb").Run(); err != nil {
		if os.Getenv("CAUSALITY_REQUIRE_REAL_SERVERS") != "" {
			t.Fatal("chDB is not installed (make test installs it): DDL and queries not checked on current ClickHouse")
		}
		t.Skip("chDB is not installed (python3 -m pip install chdb): DDL and queries not checked on current ClickHouse")
	}
	schema := writeSchema(t, t.TempDir())
	cmd := exec.Command("python3", "testdata/chdb_check.py", schema, "../../../docs/queries.sql")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Log(strings.TrimSpace(stderr.String()))
	if err != nil {
		t.Fatalf("chdb_check.py: %v\n%s", err, stderr.String())
	}
	names, _ := namedQueries(t)
	for _, n := range names {
		if !strings.Contains(string(out), "### "+n+"\n") {
			t.Errorf("query %s did not run on chDB", n)
		}
	}
}

// writeSchema writes the statements Migrate runs, for database causality,
// into dir and returns the file name.
func writeSchema(t *testing.T, dir string) string {
	t.Helper()
	ms, err := warehouse.Migrations("causality")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range warehouse.BootstrapStatements("causality") {
		b.WriteString(s + ";\n")
	}
	for _, m := range ms {
		for _, s := range m.Statements {
			b.WriteString(s + ";\n")
		}
	}
	f := filepath.Join(dir, "schema.sql")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
