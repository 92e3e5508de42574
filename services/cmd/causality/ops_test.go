package main

// What an operator relies on, for every service: -version, every flag
// settable from a CAUSALITY_* variable, clear errors for bad settings at
// start, and a stop bounded by -shutdown-timeout.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/kafkatest"
)

var serviceCommands = []string{"collector", "sink", "detector"}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{
		{"-version"}, {"--version"}, {"version"},
		{"collector", "-version"}, {"sink", "-version"}, {"detector", "--version"},
		{"dev", "-version"}, {"keys", "-version"}, {"sql", "-version"},
		// -version wins over settings that would fail later.
		{"collector", "-kafka.brokers=nohost", "-version"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Errorf("causality %s: %v (stderr %q)", strings.Join(args, " "), err, stderr.String())
		}
		if got := stdout.String(); got != version+"\n" {
			t.Errorf("causality %s printed %q, want the version %q", strings.Join(args, " "), got, version)
		}
	}
	// Only on the command line: CAUSALITY_VERSION is not a flag.
	t.Setenv("CAUSALITY_VERSION", "true")
	err := run(context.Background(), []string{"sink", "-sink.batch-size=0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-sink.batch-size") {
		t.Errorf("with CAUSALITY_VERSION set: %v, want the sink's own config error", err)
	}
}

// TestEveryFlagFromEnvironment: each flag of each service has one
// variable, CAUSALITY_ + the name upper-cased with . and - as _; setting all
// of them at once (to their defaults) parses; a set variable changes the
// flag; the command line wins; a bad value names the variable.
func TestEveryFlagFromEnvironment(t *testing.T) {
	for _, cmd := range serviceCommands {
		fs, err := commandFlags(cmd)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		fs.VisitAll(func(f *flag.Flag) {
			name := envName(f.Name)
			if other, dup := seen[name]; dup {
				t.Errorf("%s: -%s and -%s are both %s", cmd, other, f.Name, name)
			}
			seen[name] = f.Name
			if !strings.HasPrefix(name, "CAUSALITY_") || strings.ContainsAny(name, ".-") || name != strings.ToUpper(name) {
				t.Errorf("%s: -%s has the variable %q", cmd, f.Name, name)
			}
		})
		t.Run(cmd+"/all at their defaults", func(t *testing.T) {
			fs, _ := commandFlags(cmd)
			fs.VisitAll(func(f *flag.Flag) { t.Setenv(envName(f.Name), f.DefValue) })
			if err := parse(fs, nil); err != nil {
				t.Fatalf("every CAUSALITY_* variable of %s at its default: %v", cmd, err)
			}
		})
	}

	t.Run("set, overridden, refused", func(t *testing.T) {
		t.Setenv("CAUSALITY_INGEST_CREDITS", "3")
		t.Setenv("CAUSALITY_LOG_LEVEL", "debug")
		t.Setenv("CAUSALITY_SHUTDOWN_TIMEOUT", "7s")
		fs, _ := commandFlags("collector")
		if err := parse(fs, []string{"-log.level=warn"}); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"ingest.credits": "3", "shutdown-timeout": "7s", "log.level": "warn"} {
			if got := fs.Lookup(name).Value.String(); got != want {
				t.Errorf("-%s = %s, want %s", name, got, want)
			}
		}
		t.Setenv("CAUSALITY_INGEST_CREDITS", "three")
		fs, _ = commandFlags("collector")
		if err := parse(fs, nil); err == nil || !strings.Contains(err.Error(), `CAUSALITY_INGEST_CREDITS="three"`) {
			t.Errorf("bad variable: %v, want an error naming CAUSALITY_INGEST_CREDITS", err)
		}
	})
}

// TestServiceConfigErrors: bad settings stop each service at start, before
// it dials anything, with an error naming the flag.
func TestServiceConfigErrors(t *testing.T) {
	keys := writeKeys(t, "app")
	missing := filepath.Join(t.TempDir(), "none.json")
	collector := []string{"collector", "-admin.addr=127.0.0.1:0", "-ingest.tcp-addr=127.0.0.1:0", "-ingest.grpc-addr=127.0.0.1:0", "-ingest.http-addr=127.0.0.1:0"}
	withKeys := append(append([]string{}, collector...), "-ingest.keys-file="+keys.file)
	sink := []string{"sink", "-admin.addr=127.0.0.1:0"}
	detector := []string{"detector", "-admin.addr=127.0.0.1:0", "-detect.grpc-addr=127.0.0.1:0", "-detect.token=" + detToken}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"collector without keys", collector, nil, "-ingest.keys-file is required"},
		{"collector keys file missing", append(collector, "-ingest.keys-file="+missing), nil, "none.json"},
		{"collector bad brokers", append(withKeys, "-kafka.brokers=nohost"), nil, "-kafka.brokers"},
		{"collector no credits", append(withKeys, "-ingest.credits=0"), nil, "credits"},
		{"collector bad compression", append(withKeys, "-kafka.compression=brotli"), nil, "compression"},
		{"collector bad log format", append(withKeys, "-log.format=xml"), nil, "-log.format"},
		{"collector negative shutdown timeout", append(withKeys, "-shutdown-timeout=-1s"), nil, "-shutdown-timeout"},
		{"collector unknown flag", append(withKeys, "-ingest.nope=1"), nil, "flag provided but not defined: -ingest.nope"},
		{"collector bad variable", withKeys, map[string]string{"CAUSALITY_INGEST_DRAIN_TIMEOUT": "5"}, "CAUSALITY_INGEST_DRAIN_TIMEOUT"},
		{"sink bad log level", append(sink, "-log.level=loud"), nil, "-log.level"},
		{"sink negative shutdown timeout", append(sink, "-shutdown-timeout=-1s"), nil, "-shutdown-timeout"},
		{"sink bad variable", sink, map[string]string{"CAUSALITY_SINK_BATCH_SIZE": "many"}, "CAUSALITY_SINK_BATCH_SIZE"},
		{"detector bad log format", append(detector, "-log.format=yaml"), nil, "-log.format"},
		{"detector negative shutdown timeout", append(detector, "-shutdown-timeout=-2s"), nil, "-shutdown-timeout"},
		{"detector bad variable", detector, map[string]string{"CAUSALITY_DETECT_WINDOWS": "1m,90s"}, "multiple of"},
		{"detector stray argument", append(detector, "extra"), nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
				t.Fatalf("causality %s: %v (stderr %q), want an error about %s", strings.Join(tc.args, " "), err, stderr.String(), tc.want)
			}
		})
	}
}

// TestShutdownTimeout: a command that does not stop within its
// -shutdown-timeout of the signal is given up on with an error; within it,
// or with no limit, its own result is returned.
func TestShutdownTimeout(t *testing.T) {
	errDone := errors.New("stopped by itself")
	// service serves an admin port and stops only when release closes.
	service := func(release <-chan struct{}) command {
		return command{run: func(ctx context.Context, args []string, _, stderr io.Writer) error {
			var cfg admin.Config
			fs := flag.NewFlagSet("svc", flag.ContinueOnError)
			fs.SetOutput(stderr)
			cfg.RegisterFlags(fs)
			if err := parse(fs, args); err != nil {
				return err
			}
			adm := admin.New(cfg, prometheus.NewRegistry())
			if err := adm.Listen(); err != nil {
				return err
			}
			go func() { _ = adm.Serve(ctx) }()
			<-release
			return errDone
		}}
	}
	for _, tc := range []struct {
		name    string
		limit   string
		release bool // before the signal
		want    string
	}{
		{"stuck past the limit", "50ms", false, "-shutdown-timeout"},
		{"stops within the limit", "1h", true, errDone.Error()},
		{"no limit waits", "0s", true, errDone.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			t.Cleanup(func() {
				if !tc.release {
					close(release)
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- runBounded(ctx, service(release), []string{"-admin.addr=127.0.0.1:0", "-shutdown-timeout=" + tc.limit}, io.Discard, io.Discard)
			}()
			cancel()
			if tc.release {
				close(release)
			}
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("runBounded = %v, want %q", err, tc.want)
				}
			case <-time.After(waitLimit):
				t.Fatal("runBounded did not return")
			}
		})
	}
}

// TestCollectorSIGTERMBounded runs bin/causality collector and sends it
// SIGTERM twice: with nothing connected it drains and exits 0; with a
// client that never says Goodbye, -shutdown-timeout ends the drain the
// client would hold for -ingest.drain-timeout, and the exit status says so.
func TestCollectorSIGTERMBounded(t *testing.T) {
	bin := collectorBinary(t)
	keys := writeKeys(t, "app")
	cfgK := kafkatest.Config(t)
	for _, tc := range []struct {
		name   string
		client bool
		ok     bool
	}{
		{"idle collector stops cleanly", false, true},
		{"held drain is cut at the limit", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := newLogWatch()
			logs.dumpOnFailure(t, "collector")
			cmd := exec.Command(bin, append([]string{"collector"}, collectorArgs(cfgK, keys.file, "-ingest.drain-timeout=10m", "-shutdown-timeout=1s")...)...)
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			var a addrs
			select {
			case a = <-logs.addrs:
			case err := <-exited:
				t.Fatalf("collector exited before listening: %v", err)
			case <-time.After(waitLimit):
				t.Fatal("collector did not listen")
			}
			if tc.client {
				f := dialFrames(t, a.TCP)
				f.hello(t, keys.key["app"])
				t.Cleanup(func() { f.conn.Close() })
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if tc.ok && err != nil {
					t.Fatalf("exit after SIGTERM: %v, want 0", err)
				}
				if !tc.ok {
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(logs.String(), "-shutdown-timeout") {
						t.Fatalf("exit after SIGTERM with a held drain: %v, want status 1 and a message about -shutdown-timeout", err)
					}
				}
			case <-time.After(waitLimit):
				t.Fatal("collector did not exit after SIGTERM")
			}
			if conn, err := net.Dial("tcp", a.TCP); err == nil {
				conn.Close()
				t.Error("the stopped collector still accepts connections")
			}
		})
	}
}
