package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"causality.dev/services/internal/warehouse"
)

func init() {
	commands["sql"] = command{"open a SQL prompt on ClickHouse (-q QUERY runs one query)", runSQL}
}

// maxPrintedRows bounds what one statement prints (and holds in memory).
const maxPrintedRows = 10000

func runSQL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return sqlMain(ctx, args, os.Stdin, stdout, stderr)
}

// sqlMain is the sql command with its input given: statements end with ';'
// (-q needs none), results print as aligned columns. In the prompt a failed
// statement prints its error and the prompt goes on; with -q it is the
// command's error.
func sqlMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var cfg warehouse.Config
	var query string
	fs := flag.NewFlagSet("sql", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	fs.StringVar(&query, "q", "", "run this one query, print its result and exit")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	client, err := warehouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	if query != "" {
		if err := runStatement(ctx, client, query, stdout); err != nil {
			return errors.New(shortError(err))
		}
		return nil
	}
	interactive := isTerminal(stdin)
	if interactive {
		fmt.Fprintf(stdout, "Connected to ClickHouse at %s, database %s. End statements with ';', quit with \\q or Ctrl-D.\n", cfg.Addr, cfg.Database)
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var stmt strings.Builder
	prompt := func() {
		if !interactive {
			return
		}
		if stmt.Len() == 0 {
			fmt.Fprint(stdout, "causality> ")
		} else {
			fmt.Fprint(stdout, "        -> ")
		}
	}
	prompt()
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if stmt.Len() == 0 && (t == `\q` || t == "quit" || t == "exit") {
			return nil
		}
		if stmt.Len() > 0 || t != "" {
			stmt.WriteString(line)
			stmt.WriteByte('\n')
		}
		if strings.HasSuffix(t, ";") {
			q := stmt.String()
			stmt.Reset()
			start := time.Now()
			if err := runStatement(ctx, client, q, stdout); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(stdout, "error: %s\n", shortError(err))
			} else if interactive {
				fmt.Fprintf(stdout, "(%.3f s)\n", time.Since(start).Seconds())
			}
		}
		prompt()
	}
	if rest := strings.TrimSpace(stmt.String()); rest != "" {
		if err := runStatement(ctx, client, rest, stdout); err != nil {
			fmt.Fprintf(stdout, "error: %s\n", shortError(err))
		}
	}
	if interactive {
		fmt.Fprintln(stdout)
	}
	return sc.Err()
}

// shortError drops the list of every token the parser would have accepted
// from ClickHouse's syntax errors: the position and the text are the useful
// part.
func shortError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ". Expected one of:"); i >= 0 {
		return msg[:i]
	}
	return msg
}

var insertValues = regexp.MustCompile(`(?is)^\s*INSERT\b.*\b(VALUES|FORMAT)\b`)

// runStatement runs one statement and prints its result.
func runStatement(ctx context.Context, c *warehouse.Client, q string, w io.Writer) error {
	q = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(q), ";"))
	if q == "" {
		return nil
	}
	if insertValues.MatchString(q) {
		return errors.New("INSERT ... VALUES/FORMAT is not supported here (ClickHouse 18.16 waits for a data stream); use INSERT ... SELECT, or clickhouse-client")
	}
	res, err := c.Query(ctx, q, maxPrintedRows)
	if err != nil {
		return err
	}
	if len(res.Columns) == 0 {
		_, err := fmt.Fprintln(w, "ok")
		return err
	}
	printTable(w, res)
	return nil
}

// printTable prints res as aligned columns; numbers align right.
func printTable(w io.Writer, res *warehouse.Result) {
	width := make([]int, len(res.Columns))
	for i, c := range res.Columns {
		width[i] = utf8.RuneCountInString(c)
	}
	for _, r := range res.Rows {
		for i, v := range r {
			width[i] = max(width[i], utf8.RuneCountInString(v))
		}
	}
	right := make([]bool, len(res.Columns))
	for i, t := range res.Types {
		t = strings.TrimPrefix(t, "Nullable(")
		right[i] = strings.HasPrefix(t, "Int") || strings.HasPrefix(t, "UInt") || strings.HasPrefix(t, "Float") || strings.HasPrefix(t, "Decimal")
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if right[i] {
				b.WriteString(pad + c)
			} else if i < len(cells)-1 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(res.Columns)
	dashes := make([]string, len(width))
	for i, n := range width {
		dashes[i] = strings.Repeat("-", n)
	}
	line(dashes)
	for _, r := range res.Rows {
		line(r)
	}
	switch {
	case res.Truncated:
		fmt.Fprintf(w, "(first %d rows shown; add a LIMIT)\n", len(res.Rows))
	case len(res.Rows) == 1:
		fmt.Fprintln(w, "(1 row)")
	default:
		fmt.Fprintf(w, "(%d rows)\n", len(res.Rows))
	}
}

// isTerminal reports whether r is a character device (a person typing).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
