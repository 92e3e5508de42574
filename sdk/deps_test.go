package sdk_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps server code out of the SDK's graph, and gRPC and
// WebSocket code out of the core package (the js/wasm build links only the
// WebSocket transport).
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	server := []string{"causality.dev/services", "segmentio/kafka-go", "twmb/franz-go", "ClickHouse/"}
	tests := []struct {
		pkg       string
		env       []string
		forbidden []string
	}{
		{"causality.dev/sdk", nil, append(server, "google.golang.org/grpc", "github.com/coder/websocket")},
		{"causality.dev/sdk/wstransport", nil, append(server, "google.golang.org/grpc")},
		{"causality.dev/sdk/wstransport", []string{"GOOS=js", "GOARCH=wasm"}, append(server, "google.golang.org/grpc")},
		{"causality.dev/sdk/wasm", []string{"GOOS=js", "GOARCH=wasm"}, append(server, "google.golang.org/grpc")},
		{"causality.dev/sdk/mobile", nil, append(server, "google.golang.org/grpc")},
		{"causality.dev/sdk/grpctransport", nil, server},
		{"causality.dev/sdk/sdktest", nil, append(server, "google.golang.org/grpc")},
	}
	for _, tt := range tests {
		t.Run(tt.pkg+strings.Join(tt.env, ","), func(t *testing.T) {
			cmd := exec.Command(goBin, "list", "-deps", tt.pkg)
			cmd.Env = append(os.Environ(), tt.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", tt.pkg, err)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("go list found only %v", deps)
			}
			for _, d := range deps {
				for _, f := range tt.forbidden {
					if strings.Contains(d, f) {
						t.Errorf("%s depends on %s", tt.pkg, d)
					}
				}
			}
		})
	}
}
