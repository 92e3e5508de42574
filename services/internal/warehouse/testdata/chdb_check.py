#!/usr/bin/env python3
"""Run the warehouse DDL and the analyst queries on a current ClickHouse
engine (chDB, in-process) and print each query's result as TSV.

usage: chdb_check.py SCHEMA.sql QUERIES.sql [DATA_DIR]

SCHEMA.sql holds the statements warehouse.Migrate runs, rendered for the
database `causality`; QUERIES.sql is docs/queries.sql. Both are split like
the Go code splits them: a statement ends with a line ending in ';', and
lines starting with '--' are comments ('-- name: X' names a query).
DATA_DIR may hold TABLE.tsv files in TSVWithNames, loaded into those tables
(materialized views fire) before the queries run.

Output: for each query a line '### name' followed by its TSV rows. Exit
status 1 with the failing statement on stderr when any statement fails.
Install chDB with: python3 -m pip install chdb
"""
import os
import sys
import tempfile

from chdb import session


def split_statements(text):
    """Yield (name, statement) pairs; name is '' when there is none."""
    name, cur = "", []
    for line in text.split("\n"):
        t = line.strip()
        if t.startswith("--"):
            if t.startswith("-- name:") and not cur:
                name = t[len("-- name:"):].strip()
            continue
        if not cur and not t:
            continue
        cur.append(line.rstrip())
        if t.endswith(";"):
            stmt = "\n".join(cur).strip()[:-1].strip()
            if stmt:
                yield name, stmt
            name, cur = "", []
    if "\n".join(cur).strip():
        yield name, "\n".join(cur).strip()


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        schema = f.read()
    with open(argv[2]) as f:
        queries = f.read()
    s = session.Session(tempfile.mkdtemp(prefix="chdb-check-"))
    failed = 0
    for _, stmt in split_statements(schema):
        try:
            s.query(stmt)
        except Exception as e:  # chDB raises its own error types
            print(f"schema statement failed: {e}\n{stmt}", file=sys.stderr)
            failed += 1
    if len(argv) == 4:
        for fn in sorted(os.listdir(argv[3])):
            if fn.endswith(".tsv"):
                path = os.path.join(argv[3], fn)
                table = fn[: -len(".tsv")]
                try:
                    s.query(f"INSERT INTO causality.{table} FROM INFILE '{path}' FORMAT TSVWithNames")
                except Exception as e:
                    print(f"load {fn} failed: {e}", file=sys.stderr)
                    failed += 1
    s.query("USE causality")
    for name, stmt in split_statements(queries):
        try:
            res = s.query(stmt + "\nFORMAT TabSeparated", "TabSeparated")
        except Exception as e:
            print(f"query {name} failed: {e}\n{stmt}", file=sys.stderr)
            failed += 1
            continue
        print(f"### {name}")
        out = res.bytes().decode() if hasattr(res, "bytes") else str(res)
        sys.stdout.write(out)
    print(f"chdb {s.query('SELECT version()', 'TabSeparated').bytes().decode().strip()}: "
          f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
