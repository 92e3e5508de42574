package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
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
		"-eval.devices=200", "-eval.duration=24m", "-eval.change-at=14m", "-eval.scenarios=genuine,replay", "-eval.seeds=1", "-eval.command=go test",
		"-log.level=warn"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, stderr.String())
	}
	report, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	// The anomalies came over DetectorService.Subscribe and matched the topic.
	for _, want := range []string{"# Evaluation of the detector", "| replay |", "| genuine |", "evaluation.png", "Time compression", "gRPC Subscribe (= Kafka topic)"} {
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

func TestSameIDs(t *testing.T) {
	an := func(ids ...string) []*detectv1.Anomaly {
		var out []*detectv1.Anomaly
		for _, id := range ids {
			out = append(out, &detectv1.Anomaly{Id: id})
		}
		return out
	}
	tests := []struct {
		name     string
		streamed []*detectv1.Anomaly
		topic    []string
		ok       bool
	}{
		{"same", an("a", "b"), []string{"b", "a"}, true},
		{"a retried write repeats one in the topic", an("a", "b"), []string{"a", "b", "b"}, true},
		{"nothing", nil, nil, true},
		{"streamed twice", an("a", "a"), []string{"a"}, false},
		{"missing from the stream", an("a"), []string{"a", "b"}, false},
		{"missing from the topic", an("a", "b"), []string{"a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := sameIDs(tt.streamed, tt.topic); (err == nil) != tt.ok {
				t.Errorf("sameIDs = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
