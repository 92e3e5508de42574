# Causality: `make help` lists the verbs. Tools are pinned and installed into
# .bin/ on first use; real Kafka and ClickHouse come from deploy/local/.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BUF_VERSION := 1.75.0
BIN := $(CURDIR)/.bin
export PATH := $(BIN):$(BIN)/npm/node_modules/.bin:$(PATH)
SERVERS := deploy/local/servers.sh
MODULES := work
GO_TEST_FLAGS ?= -count=1 -timeout 25m

.PHONY: mobile mobile-android mobile-ios wasm wasm-test chdb help tools generate checkgenerate lint build test test-unit fuzz bench eval demo servers-up servers-down baseline clean check-deploy

help: ## list the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/npm/node_modules/.bin/buf:
	npm install --silent --no-audit --no-fund --prefix $(BIN)/npm @bufbuild/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: tools/go.mod tools/go.sum
	cd tools && GOWORK=off go build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

$(BIN)/gobind $(BIN)/gomobile: tools/go.mod tools/go.sum
	cd tools && GOWORK=off go build -o $(BIN)/ golang.org/x/mobile/cmd/gobind golang.org/x/mobile/cmd/gomobile

# promtool at the version pinned in tools/go.mod (Prometheus v3.16.0 = module v0.316.0).
$(BIN)/promtool: tools/go.mod tools/go.sum
	cd tools && GOWORK=off go build -o $(BIN)/ github.com/prometheus/prometheus/cmd/promtool

tools: $(BIN)/npm/node_modules/.bin/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## install pinned buf and protoc plugins into .bin/

generate: tools ## regenerate api/gen from the protos
	buf format -w
	buf generate

checkgenerate: generate ## fail if generated code or proto formatting is stale
	@test -z "$$(git status --porcelain -- api)" || { git status --porcelain -- api; git diff --stat -- api; echo "api/ changed after make generate: commit the result"; exit 1; }

lint: tools ## go vet, gofmt, buf lint, buf format, buf breaking against the committed baseline
	go vet $(MODULES)
	@test -z "$$(gofmt -l api/*.go services sdk 2>/dev/null)" || { gofmt -l services sdk; echo "gofmt needed"; exit 1; }
	buf lint
	buf format -d --exit-code
	buf breaking --against api/breaking-baseline.binpb

baseline: tools ## accept the current protos as the buf breaking baseline
	buf build -o api/breaking-baseline.binpb

build: ## build the single binary bin/causality
	go build -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/causality ./services/cmd/causality

servers-up: ## start the local Kafka and ClickHouse (deploy/local)
	$(SERVERS) up

servers-down: ## stop them
	$(SERVERS) down

demo: ## start the dev stack in the background, simulate a fleet for ~20 s, print where to look (stop: deploy/local/demo.sh stop)
	deploy/local/demo.sh

CHDB_VERSION := 4.4.0

chdb: ## install chDB (a current ClickHouse engine, in-process) to check the DDL and queries
	@python3 -c 'import chdb' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check chdb==$(CHDB_VERSION)

check-deploy: $(BIN)/promtool ## promtool check + unit tests of deploy/prometheus; compose/k8s flags and ports against the binary
	promtool check config deploy/prometheus/prometheus.yml deploy/prometheus/prometheus-k8s.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	go test -count=1 -run '^TestDeployManifests' ./services/cmd/causality

test: build chdb check-deploy ## unit and integration tests against a real Kafka broker and ClickHouse (and chDB)
	$(SERVERS) up
	set -o pipefail; eval "$$($(SERVERS) env)"; export CAUSALITY_REQUIRE_REAL_SERVERS=1 CAUSALITY_BIN=$(CURDIR)/bin/causality; \
	  rc=0; go test $(GO_TEST_FLAGS) $(MODULES) || rc=$$?; \
	  (cd services && go test -run '^$$' -fuzz FuzzReadFrame -fuzztime 10s ./internal/ingest) || rc=$$?; \
	  $(SERVERS) down; exit $$rc

test-unit: ## tests without the real servers (embedded Kafka where needed)
	go test $(GO_TEST_FLAGS) -short $(MODULES)

bench: build ## benchmarks against the real servers; results go in docs/benchmarks.md
	$(SERVERS) up
	eval "$$($(SERVERS) env)"; export CAUSALITY_REQUIRE_REAL_SERVERS=1; \
	  rc=0; go test -run '^$$' -bench . -benchmem -benchtime 3x -count 1 ./services/... | tee .causality/bench.txt || rc=$$?; \
	  $(SERVERS) down; exit $$rc

eval: build ## labelled evaluation: every scenario with 6 seeds through collector, Kafka and detector -> docs/evaluation.md, docs/evaluation.png (~12 min)
	$(SERVERS) up
	mkdir -p .causality
	eval "$$($(SERVERS) env)"; set -o pipefail; rc=0; \
	  (cd services && go test -run '^$$' -bench . -benchmem ./internal/detect/) | tee .causality/eval-bench.txt || rc=$$?; \
	  [ $$rc -ne 0 ] || bin/causality eval -kafka.brokers=$$CAUSALITY_TEST_KAFKA -eval.bench=.causality/eval-bench.txt -eval.seeds=6 || rc=$$?; \
	  $(SERVERS) down; exit $$rc

MOBILE_OUT := $(CURDIR)/.causality/mobile

mobile: $(BIN)/gobind ## gobind Java+ObjC (fail on skipped API), JNI lib for linux/amd64, javac, Java wrapper tests on the host JVM
	sdk/mobile/bind.sh $(MOBILE_OUT)
	$(SERVERS) up
	eval "$$($(SERVERS) env)"; CAUSALITY_REQUIRE_REAL_SERVERS=1 CAUSALITY_MOBILE_DIR=$(MOBILE_OUT) go test -count=1 -run '^TestMobileJVM$$' -v ./services/cmd/causality

mobile-android: $(BIN)/gobind $(BIN)/gomobile ## gomobile bind -target=android -> .causality/mobile/causality.aar (needs the Android SDK + NDK)
	sdk/mobile/bind.sh $(MOBILE_OUT) android

mobile-ios: $(BIN)/gobind $(BIN)/gomobile ## gomobile bind -target=ios -> sdk/ios/Causality.xcframework (needs macOS + Xcode)
	sdk/mobile/bind.sh $(MOBILE_OUT) ios

TYPESCRIPT_VERSION := 5.9.3

$(BIN)/npm/node_modules/.bin/tsc:
	npm install --silent --no-audit --no-fund --prefix $(BIN)/npm typescript@$(TYPESCRIPT_VERSION)

wasm: $(BIN)/npm/node_modules/.bin/tsc ## js/wasm SDK into sdk/wasm/dist, tsc the wrapper (index.js, index.d.ts), print sizes
	GOOS=js GOARCH=wasm go vet ./sdk/wasm
	GOOS=js GOARCH=wasm go build -trimpath -ldflags="-s -w" -o sdk/wasm/dist/causality.wasm ./sdk/wasm
	cp "$$(go env GOROOT)/lib/wasm/wasm_exec.js" sdk/wasm/dist/
	cd sdk/wasm && tsc -p .
	@echo "causality.wasm: $$(stat -c %s sdk/wasm/dist/causality.wasm) bytes raw, $$(gzip -9 -c sdk/wasm/dist/causality.wasm | wc -c) gzipped"

wasm-test: ## the web SDK in headless Chromium against a collector (TestWasmBrowser; needs chromium, node, npm)
	go test -count=1 -run '^TestWasmBrowser$$' -v ./services/cmd/causality

clean: ## remove build output and local server state
	rm -rf bin .causality
