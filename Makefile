# tenantmem: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
# Where `make run` keeps its PostgreSQL cluster and state.
DATA_DIR ?= $(CURDIR)/data
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install PostgreSQL 15+ with pgvector 0.8+ when missing (idempotent; needs root to install).
	@bash deploy/install-pgvector.sh

.PHONY: run
run: deps ## Start a private PostgreSQL under ./data, init it, and serve the provisioning API (:8081) and router (:8080).
	$(GO) run ./cmd/devstack --data-dir "$(DATA_DIR)"

.PHONY: test
test: deps ## Install what the tests need, then vet and run every test with the race detector.
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

.PHONY: bench
bench: deps ## Run the benchmarks once each (see docs/benchmarks.md for the figures and knobs).
	$(GO) test -run '^$$' -bench . -timeout 90m $(PKGS)

.PHONY: chaos
chaos: deps ## Fault scenarios, longer (TENANTMEM_CHAOS_SECONDS, default 20 each) plus a full disk (root); prints the codes clients saw.
	TENANTMEM_CHAOS_REPORT=$(CURDIR)/bin/chaos-report.md $(GO) test -tags chaos -count=1 -timeout 60m -run 'TestChaosLong' -v ./internal/chaos | grep -v 'time='
	@mkdir -p bin; echo; cat bin/chaos-report.md

.PHONY: lint
lint: ## Run golangci-lint (.golangci.yml); installs v2.15.0 into $(go env GOPATH)/bin when missing.
	@command -v golangci-lint >/dev/null || test -x "$$($(GO) env GOPATH)/bin/golangci-lint" || \
		$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...

.PHONY: fuzz
fuzz: ## Fuzz the tenant id mapping and the chunker for 30 s each.
	$(GO) test -run '^$$' -fuzz FuzzName -fuzztime 30s ./internal/schema
	$(GO) test -run '^$$' -fuzz FuzzSplit -fuzztime 30s ./internal/chunk

.PHONY: build
build: ## Build the router and provisioner binaries into ./bin.
	$(GO) build -o bin/ ./cmd/...

.PHONY: clean
clean: ## Stop nothing, delete ./bin and the make-run data folder.
	rm -rf bin "$(DATA_DIR)"
