// Command causality is the single binary of Causality. Its subcommands wire
// the internal packages together; they hold no logic of their own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"causality.dev/services/internal/admin"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"collector": {"serve TCP frames, gRPC, HTTP and WebSocket, and write events to Kafka", runCollector},
	"keys":      {"create an ingest key for an app and print its keys-file entry", runKeys},
	"version": {"print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		_, err := fmt.Fprintln(stdout, version)
		return err
	}},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the next one kills at once (the default action).
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "causality:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	if args[0] == "-version" || args[0] == "--version" {
		args[0] = "version"
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	err := runBounded(ctx, c, args[1:], stdout, stderr)
	if errors.Is(err, errVersion) {
		_, err = fmt.Fprintln(stdout, version)
	}
	return err
}

// runBounded runs c until it returns. Once ctx ends (SIGTERM, Ctrl-C), c has
// the -shutdown-timeout of its admin config (services only; other commands
// have no limit) to drain and return; past it runBounded returns an error
// without waiting, and main exits non-zero.
func runBounded(ctx context.Context, c command, args []string, stdout, stderr io.Writer) error {
	var limit admin.ShutdownLimit
	done := make(chan error, 1)
	go func() { done <- c.run(admin.WithShutdownLimit(ctx, &limit), args, stdout, stderr) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select { // a signal during start-up: the limit is recorded when the admin port serves
	case err := <-done:
		return err
	case <-limit.Recorded():
	}
	d := limit.Timeout()
	if d <= 0 {
		return <-done
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("still stopping %s after the signal (-shutdown-timeout): exiting without waiting", d)
	}
}

func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: causality COMMAND [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'causality COMMAND -h' for its flags, 'causality COMMAND -version' (or")
	fmt.Fprintln(w, "'causality -version') for the version. Every flag can also be set from the")
	fmt.Fprintln(w, "environment: -kafka.brokers is CAUSALITY_KAFKA_BROKERS; the command line wins.")
}

// errVersion is what parse returns for -version; run then prints the
// version and succeeds.
var errVersion = errors.New("version requested")

// envName is the environment variable of a flag: CAUSALITY_ and the name
// upper-cased, with '.' and '-' as '_' (-kafka.brokers: CAUSALITY_KAFKA_BROKERS).
func envName(flagName string) string {
	return "CAUSALITY_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flagName))
}

// parse parses args into fs after applying CAUSALITY_* environment
// variables; flags given on the command line win. -version (command line
// only) makes it return errVersion.
func parse(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	var showVersion *bool
	if fs.Lookup("version") == nil {
		showVersion = fs.Bool("version", false, "print the version and exit")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if showVersion != nil && *showVersion {
		return errVersion
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return nil
}

// parseFlags builds the flag set of subcommand name with register, reads
// the environment and args into it, then validates.
func parseFlags(name string, args []string, stderr io.Writer, register func(*flag.FlagSet), validate func() error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return validate()
}

// withAdminPort runs serve beside the admin port (/metrics, /healthz,
// /readyz, /debug/pprof), which serve registers its metrics and readiness
// checks on: the one errgroup of a service subcommand.
func withAdminPort(ctx context.Context, cfg admin.Config, logger *slog.Logger, serve func(ctx context.Context, reg prometheus.Registerer, adm *admin.Server) error) error {
	reg := admin.NewRegistry()
	adm := admin.New(cfg, reg)
	if err := adm.Listen(); err != nil {
		return err
	}
	logger.Info("admin listening", "addr", adm.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Serve(gctx) })
	g.Go(func() error { return serve(gctx, reg, adm) })
	return g.Wait()
}

// logFlags holds -log.level and -log.format.
type logFlags struct {
	level, format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log.level", "info", "debug, info, warn or error")
	fs.StringVar(&l.format, "log.format", "json", "json or text")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch l.format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log.format: %q is neither json nor text", l.format)
}
