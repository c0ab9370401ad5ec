# tether — build, run and test. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
BIN     := $(CURDIR)/bin
# Tools and control-plane builds live outside the repo, keyed by version, so that a
# second run starts in seconds and nothing third-party is ever committed.
CACHE   ?= $(HOME)/.cache/tether
TOOLS   := $(CACHE)/tools

BUF_VERSION          := v1.75.0
PROTOC_GEN_GO        := v1.36.12
PROTOC_GEN_GO_GRPC   := v1.6.2

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

GRPCURL_VERSION      := v1.9.4
GRPCURL              := $(TOOLS)/grpcurl-$(GRPCURL_VERSION)/grpcurl
HELM_VERSION         := v4.3.2
HELM                 := $(TOOLS)/helm-$(HELM_VERSION)/helm
LISTEN               ?= :8080
CALL_ADDR            ?= localhost:8080

.PHONY: build
build: ## build the gateway and the example server into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: run
run: build ## run the gateway with the example backend on the local runtime
	@echo "tether: gateway on $(LISTEN), one tether-example process per client connection."
	@echo "tether: in another terminal: make call   (or see the README for grpcurl and Go clients)"
	@TETHER_LISTEN="$${TETHER_LISTEN:-$(LISTEN)}" exec $(BIN)/tether

.PHONY: call
call: tools ## call the example through a running gateway (make run) with grpcurl
	$(GRPCURL) -plaintext -H 'x-tether-cpu: 1' -H 'x-tether-memory: 256Mi' \
		$(CALL_ADDR) tether.example.v1.Session/Info

.PHONY: tools
tools: $(GRPCURL) ## install the test tools (grpcurl) into the cache

$(GRPCURL):
	GOBIN=$(dir $@) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

.PHONY: test
test: vet tools ## run every test: unit and end to end, with the race detector
	TETHER_GRPCURL=$(GRPCURL) $(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory bench-smoke

.PHONY: vet
vet:
	$(GO) vet ./...

# --- code generation --------------------------------------------------------------

.PHONY: proto
proto: BUF_BIN := $(TOOLS)/buf-$(BUF_VERSION)
proto: GEN_GO_BIN := $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO)
proto: GEN_GRPC_BIN := $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC)
proto: ## regenerate the example server's protobuf code (tools from the Go module proxy)
	@test -x $(BUF_BIN)/buf || GOBIN=$(BUF_BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@test -x $(GEN_GO_BIN)/protoc-gen-go || GOBIN=$(GEN_GO_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	@test -x $(GEN_GRPC_BIN)/protoc-gen-go-grpc || GOBIN=$(GEN_GRPC_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)
	cd cmd/tether-example && PATH="$(GEN_GO_BIN):$(GEN_GRPC_BIN):$$PATH" $(BUF_BIN)/buf generate

# --- control plane for e2e ---------------------------------------------------------
# etcd, kube-apiserver and kube-scheduler are built from the Go module proxy into
# $(CACHE)/controlplane/ (5 to 12 minutes the first time, then a no-op), and the e2e
# suite in e2e/ (its own module) runs against them with the node agent.

.PHONY: controlplane
controlplane: ## build etcd, kube-apiserver and kube-scheduler into the cache (once)
	@TETHER_CACHE=$(CACHE) e2e/controlplane/build.sh

.PHONY: e2e
e2e: controlplane $(HELM) ## run the end-to-end suite (Kubernetes runtime, Helm chart) against a real control plane
	cd e2e && TETHER_CACHE=$(CACHE) TETHER_HELM=$(HELM) $(GO) test -race -count=1 ./...

# --- Helm chart -------------------------------------------------------------------
# charts/tether is checked by e2e/chart: helm lint and template for every scenario in
# charts/tether/ci, assertions on the rendered objects, a server-side dry-run apply of
# each on the e2e control plane, the chart's RBAC proven with the real gateway, and
# the README's values table. helm is pinned and built from the Go module proxy into
# the cache (about 2 minutes the first time); a machine's own helm is never used.

$(HELM):
	GOBIN=$(dir $@) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

.PHONY: chart-test
chart-test: controlplane $(HELM) ## check the Helm chart: lint, templates, API server, RBAC, README table
	cd e2e && TETHER_CACHE=$(CACHE) TETHER_HELM=$(HELM) $(GO) test -race -count=1 ./chart/...

.PHONY: chart-docs
chart-docs: ## regenerate the README's values table from charts/tether/values.yaml
	cd e2e && $(GO) run ./chart/cmd/chart-docs

# --- benchmarks --------------------------------------------------------------------
# tether against a direct connection, nginx, HAProxy and Caddy on 127.0.0.1 (see the
# README's Performance section). The harness lives in e2e/bench, out of the product
# module; its results go to $(BENCH_OUT), one JSON-lines file per run.

GHZ_VERSION  := v0.120.0
GHZ          := $(TOOLS)/ghz-$(GHZ_VERSION)/ghz
BENCH_BIN    := $(CACHE)/bench/bin
BENCH_OUT    := $(CACHE)/bench
BENCH_ROUNDS ?= 5
# The source tree measured: this one, or another checkout (say, a commit to compare).
BENCH_SRC    ?= $(CURDIR)
# The harness, the backend and the load generators run on CPU 0; each proxy runs on CPU 1.
BENCH_RUN    := taskset -c 0 $(BENCH_BIN)/bench -bin $(BENCH_BIN) -ghz $(GHZ) -out $(BENCH_OUT)

$(GHZ):
	GOBIN=$(dir $@) $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

.PHONY: bench-tools
bench-tools: $(GHZ) ## install nginx, HAProxy, h2load, Caddy (Debian) and ghz (Go module proxy)
	@e2e/bench/install-tools.sh

.PHONY: bench-build
bench-build:
	@cd $(BENCH_SRC) && $(GO) build -o $(BENCH_BIN)/ ./cmd/tether ./cmd/tether-example
	@cd $(BENCH_SRC)/e2e && $(GO) build -o $(BENCH_BIN)/ ./bench ./bench/backend ./bench/tetherprof

.PHONY: bench
bench: bench-tools bench-build ## measure tether against nginx, HAProxy, Caddy and a direct connection; print the gates
	$(BENCH_RUN) -mode full -rounds $(BENCH_ROUNDS)

.PHONY: bench-smoke
bench-smoke: bench-tools bench-build ## check every benchmark target answers grpc-status 0 (part of make test)
	$(BENCH_RUN) -mode smoke

.PHONY: bench-profile
bench-profile: bench-tools bench-build ## CPU and allocation profiles of the gateway under load (pprof top 10)
	$(BENCH_RUN) -mode profile

.PHONY: bench-go
bench-go: ## in-process benchmarks of the relay's hot path (ns/op, allocs/op)
	cd $(BENCH_SRC) && $(GO) test -run '^$$' -bench . -benchmem ./gateway/relay
