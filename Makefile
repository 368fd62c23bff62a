# shardscrape — see README.md. Every tool a target needs is installed here,
# at a pinned version, into ./bin (git-ignored); nothing is assumed on the
# machine beyond Go and Debian's package manager.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO  ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned tool versions. protoc comes from Debian (bookworm ships 3.21.12);
# the generated files name it, so proto-check insists on that version.
PROTOC_VERSION             := 3.21.12
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2

# Real components the tests and benchmarks run (DESIGN.md, "Real components"):
# VictoriaMetrics single-node and vmagent, and Prometheus at the version go.mod
# requires. `go install` builds them into ./bin; internal/testenv finds them
# there (or in $SHARDSCRAPE_BIN).
VICTORIAMETRICS_VERSION := v1.151.0
PROMETHEUS_VERSION      := v0.316.0
RECEIVERS := $(BIN)/victoria-metrics $(BIN)/vmagent $(BIN)/prometheus
# kustomize renders deploy/ in its tests. v5.8.3 needs Go 1.27; v5.8.2 is the
# newest that builds on this machine's Go.
KUSTOMIZE_VERSION := v5.8.2
export SHARDSCRAPE_BIN := $(BIN)

# How long `make test` fuzzes the ring beyond its seed corpus.
FUZZTIME ?= 20s
# Benchmarks run on one core: the ring's goals are single-core figures.
BENCH_FLAGS ?= -run '^$$' -bench . -benchmem -cpu 1 -count 5

PROTO_DIR   := proto
PROTO_FILES := $(wildcard $(PROTO_DIR)/shardscrape/v1/*.proto)

.PHONY: build test unit fuzz bench bench-go bench-peers bench-coordinator binaries proto proto-check lint tools receivers run clean

## build: compile every package and command.
build:
	$(GO) build ./...

## test: everything CI runs: proto-check, lint, unit and property tests, a short fuzz.
test: proto-check lint unit fuzz

unit: receivers $(BIN)/kustomize
	$(GO) test -race -count 1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzMembership$$' -fuzztime $(FUZZTIME) ./shardring

## bench: every benchmark, results in benchmarks/results/ (see benchmarks/README.md):
## Go micro-benchmarks, the worker against Prometheus (agent) and vmagent with a
## saturation sweep and its chart, and the coordinator at high node counts.
bench: bench-go bench-peers bench-coordinator

# Extra flags for the whole-process benchmarks, e.g. a shorter run:
#   make bench-peers BENCH_PEERS_FLAGS='--duration 1m --sweep 400,800'
BENCH_PEERS_FLAGS ?=
BENCH_COORD_FLAGS ?=

bench-go:
	@mkdir -p benchmarks/results
	$(GO) test $(BENCH_FLAGS) ./... | tee benchmarks/results/$$(date -u +%Y-%m-%d)-go-bench.txt

bench-peers: receivers binaries
	$(GO) run ./benchmarks/peers --bin $(BIN) --out benchmarks/results $(BENCH_PEERS_FLAGS)

bench-coordinator: binaries
	$(GO) run ./benchmarks/coordscale --bin $(BIN) --out benchmarks/results $(BENCH_COORD_FLAGS)

## binaries: build shardscrape's commands into ./bin.
binaries:
	$(GO) build -o $(BIN)/ ./cmd/...

## lint: gofmt, go vet, staticcheck, and go.mod tidiness.
lint: $(BIN)/staticcheck
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -name '*.pb.go' -not -path './bin/*' -not -path './.git/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	$(GO) mod tidy -diff

## proto: regenerate the committed Go code from proto/.
proto: proto-tools
	$(call protoc,$(PROTO_DIR))

## proto-check: fail when regenerating would change the committed code.
proto-check: proto-tools
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/generated" "$$tmp/committed"; \
	$(call protoc,$$tmp/generated); \
	(cd $(PROTO_DIR) && find . -name '*.pb.go' -exec cp --parents {} "$$tmp/committed" \;); \
	if ! diff -ru "$$tmp/committed" "$$tmp/generated"; then \
		echo "proto-check: generated code differs from proto/; run 'make proto' and commit"; exit 1; \
	fi; \
	echo "proto-check: generated code is up to date"

define protoc
protoc -I $(PROTO_DIR) \
	--plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=$(1) --go_opt=paths=source_relative \
	--plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc --go-grpc_out=$(1) --go-grpc_opt=paths=source_relative \
	$(PROTO_FILES)
endef

## tools: install every pinned tool and the real components tests run.
tools: proto-tools $(BIN)/staticcheck receivers $(BIN)/kustomize

## receivers: install VictoriaMetrics, vmagent and Prometheus into ./bin (unit tests need them).
receivers: $(RECEIVERS)

.PHONY: proto-tools protoc
proto-tools: protoc $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc

protoc:
	@if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/duration.proto ]; then \
		echo "installing protoc from Debian (protobuf-compiler, libprotobuf-dev)"; \
		if [ "$$(id -u)" != 0 ]; then echo "protoc missing: run as root or 'sudo apt-get install protobuf-compiler libprotobuf-dev'"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; \
	fi
	@have=$$(protoc --version | awk '{print $$2}'); if [ "$$have" != "$(PROTOC_VERSION)" ]; then \
		echo "protoc $$have found, $(PROTOC_VERSION) required (Debian bookworm's protobuf-compiler): generated code names the version"; exit 1; \
	fi

# Each tool is rebuilt when its pinned version changes (the stamp file).
$(BIN)/protoc-gen-go: $(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION)
$(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@rm -f $(BIN)/.protoc-gen-go-*; touch $@

$(BIN)/protoc-gen-go-grpc: $(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@rm -f $(BIN)/.protoc-gen-go-grpc-*; touch $@

$(BIN)/kustomize: $(BIN)/.kustomize-$(KUSTOMIZE_VERSION)
$(BIN)/.kustomize-$(KUSTOMIZE_VERSION):
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@rm -f $(BIN)/.kustomize-*; touch $@

$(BIN)/staticcheck: $(BIN)/.staticcheck-$(STATICCHECK_VERSION)
$(BIN)/.staticcheck-$(STATICCHECK_VERSION):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@rm -f $(BIN)/.staticcheck-*; touch $@

# The real components, same stamp scheme. Prometheus builds with a plain
# `go install` (its go.mod has no replace directives); without the
# builtinassets tag its web UI is absent, which the tests do not use: the
# HTTP API, /-/ready and the remote-write receiver are all there.
$(BIN)/victoria-metrics: $(BIN)/.victoria-metrics-$(VICTORIAMETRICS_VERSION)
$(BIN)/.victoria-metrics-$(VICTORIAMETRICS_VERSION):
	GOBIN=$(BIN) $(GO) install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@$(VICTORIAMETRICS_VERSION)
	@rm -f $(BIN)/.victoria-metrics-*; touch $@

$(BIN)/vmagent: $(BIN)/.vmagent-$(VICTORIAMETRICS_VERSION)
$(BIN)/.vmagent-$(VICTORIAMETRICS_VERSION):
	GOBIN=$(BIN) $(GO) install github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent@$(VICTORIAMETRICS_VERSION)
	@rm -f $(BIN)/.vmagent-*; touch $@

$(BIN)/prometheus: $(BIN)/.prometheus-$(PROMETHEUS_VERSION)
$(BIN)/.prometheus-$(PROMETHEUS_VERSION):
	GOBIN=$(BIN) $(GO) install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION)
	@rm -f $(BIN)/.prometheus-*; touch $@

## run: the whole pipeline locally: VictoriaMetrics, a simulated fleet, a
## coordinator and three scrapers (examples/local). Ctrl-C stops it all.
run: $(BIN)/victoria-metrics binaries
	examples/local/run.sh

clean:
	rm -rf $(BIN)
