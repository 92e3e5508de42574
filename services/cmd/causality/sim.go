package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"causality.dev/services/internal/sim"
)

func init() {
	commands["sim"] = command{"drive a simulated fleet through the collector's TCP protocol and summarize the acks", runSim}
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg sim.Config
	var lf logFlags
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: causality sim [flags]\n\nSends realistic app events from -sim.devices simulated installs to a collector's raw\nTCP port at -sim.rate events/s, with a progress bar on stderr and a summary on stdout.\nDevices share -sim.connections connections (a real SDK opens one per device).\n\nflags:")
		fs.PrintDefaults()
	}
	cfg.RegisterFlags(fs)
	fs.StringVar(&cfg.Key, "sim.key", "", "ingest key of the app (default: the contents of -sim.key-file)")
	keyFile := fs.String("sim.key-file", filepath.Join(devDir, "key"), "file holding the ingest key; `causality dev` writes it")
	lf.register(fs)
	setDefault(fs, "log.format", "text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.Key == "" {
		b, err := os.ReadFile(*keyFile)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no ingest key: give -sim.key (or CAUSALITY_SIM_KEY), or start `causality dev`, which writes the dev key to %s", *keyFile)
		}
		if err != nil {
			return fmt.Errorf("read the ingest key: %w", err)
		}
		if cfg.Key = strings.TrimSpace(string(b)); cfg.Key == "" {
			return fmt.Errorf("%s is empty: give -sim.key, or restart `causality dev` to write a new dev key", *keyFile)
		}
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	bar := newProgressBar(stderr, logger)
	sum, err := sim.Run(ctx, cfg, logger, bar.update)
	bar.done()
	if err != nil {
		if errors.Is(err, sim.ErrKeyRejected) {
			return fmt.Errorf("%w (is it the key of the running collector? `causality dev` writes its key to %s)", err, *keyFile)
		}
		return err
	}
	sum.WriteText(stdout)
	if sum.Unacked > 0 {
		return fmt.Errorf("%d events were not acknowledged before the run ended", sum.Unacked)
	}
	return nil
}

// progressBar draws sim.Progress in place on a terminal, and logs a line
// every 5 s elsewhere.
type progressBar struct {
	w       io.Writer
	tty     bool
	logger  *slog.Logger
	lastLog time.Time
	drawn   bool
}

func newProgressBar(w io.Writer, logger *slog.Logger) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty, logger: logger, lastLog: time.Now()}
}

func (p *progressBar) update(pr sim.Progress) {
	rate := 0.0
	if s := pr.Elapsed.Seconds(); s > 0 {
		rate = float64(pr.Acked) / s
	}
	if !p.tty {
		if time.Since(p.lastLog) >= 5*time.Second {
			p.lastLog = time.Now()
			p.logger.Info("sim progress", "elapsed", pr.Elapsed.Round(time.Second), "generated", pr.Generated,
				"acknowledged", pr.Acked, "rejected", pr.Rejected, "retries", pr.Retries, "rate", fmt.Sprintf("%.0f/s", rate))
		}
		return
	}
	const width = 24
	fill := width
	if pr.Target > 0 {
		fill = min(width, int(float64(width)*pr.Elapsed.Seconds()/pr.Target.Seconds()))
	}
	bar := strings.Repeat("#", fill) + strings.Repeat(".", width-fill)
	target := ""
	if pr.Target > 0 {
		target = "/" + pr.Target.String()
	}
	fmt.Fprintf(p.w, "\r[%s] %s%s  generated %d  acked %d (%.0f/s)  rejected %d  retries %d\x1b[K",
		bar, pr.Elapsed.Truncate(100*time.Millisecond), target, pr.Generated, pr.Acked, rate, pr.Rejected, pr.Retries)
	p.drawn = true
}

func (p *progressBar) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// setDefault changes the default of a registered flag.
func setDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("setDefault: no flag " + name)
	}
	if err := f.Value.Set(value); err != nil {
		panic(fmt.Sprintf("setDefault %s=%q: %v", name, value, err))
	}
	f.DefValue = value
}
