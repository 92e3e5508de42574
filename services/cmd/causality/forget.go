package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"causality.dev/services/internal/warehouse"
)

func init() {
	commands["forget"] = command{"delete a device's, an install's or a user's data from ClickHouse (GDPR erasure; asynchronous)", runForget}
}

// runForget issues the ClickHouse mutations that delete one subject's rows
// (warehouse.Forget) and, with -wait, waits until ClickHouse has applied
// them. Kafka keeps the raw events until its retention ends, and detectors
// keep device state until -detect.device-ttl: docs/operations.md.
func runForget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg warehouse.Config
	var s warehouse.Subject
	var wait bool
	var waitTimeout time.Duration
	fs := flag.NewFlagSet("forget", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	fs.StringVar(&s.DeviceID, "device-id", "", "delete every row of this device id")
	fs.StringVar(&s.InstallID, "install-id", "", "delete the events of this install id, its sessions and its devices' anomalies")
	fs.StringVar(&s.UserID, "user-id", "", "delete the events of this user id, their sessions and their devices' anomalies")
	fs.BoolVar(&wait, "wait", false, "wait until ClickHouse has applied the deletions")
	fs.DurationVar(&waitTimeout, "wait-timeout", time.Hour, "with -wait, how long to wait")
	if err := parse(fs, args); err != nil {
		return err
	}
	if n := btoi(s.DeviceID != "") + btoi(s.InstallID != "") + btoi(s.UserID != ""); n != 1 {
		return fmt.Errorf("give exactly one of -device-id, -install-id and -user-id")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	client, err := warehouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	stmts, err := client.Forget(ctx, s)
	for _, q := range stmts {
		fmt.Fprintln(stdout, q)
	}
	if err != nil {
		return err
	}
	if !wait {
		fmt.Fprintf(stdout, "-- %d mutations issued; ClickHouse applies them in the background (see system.mutations, is_done).\n", len(stmts))
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	for {
		n, err := client.PendingMutations(wctx)
		if err != nil {
			return fmt.Errorf("waiting for the mutations: %w", err)
		}
		if n == 0 {
			fmt.Fprintf(stdout, "-- %d mutations applied.\n", len(stmts))
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%d mutations of database %s still pending after %s (they go on in the background)", n, cfg.Database, waitTimeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
