package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"causality.dev/services/internal/kafkatest"
)

// TestEvalSmoke runs `causality eval` on a tiny fleet (two scenarios)
// through a collector, Kafka and the detector, and checks the report and
// the plot it writes.
func TestEvalSmoke(t *testing.T) {
	brokers, _ := kafkatest.Brokers(t)
	dir := t.TempDir()
	md, img := filepath.Join(dir, "evaluation.md"), filepath.Join(dir, "evaluation.png")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"eval", "-kafka.brokers=" + brokers, "-eval.out=" + md, "-eval.png=" + img,
		"-eval.devices=200", "-eval.duration=24m", "-eval.change-at=14m", "-eval.scenarios=genuine,replay", "-eval.command=go test",
		"-log.level=warn"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, stderr.String())
	}
	report, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Evaluation of the detector", "| replay |", "| genuine |", "evaluation.png", "Time compression"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	// The replaying devices are found through the pipeline.
	for _, l := range strings.Split(string(report), "\n") {
		if strings.HasPrefix(l, "| replay |") && strings.Count(l, "| 0.00 |") > 3 {
			t.Errorf("replay scenario scored nothing: %s", l)
		}
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("plot: %v", err)
	}
}
