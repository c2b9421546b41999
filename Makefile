# tenantmem: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
# Where `make run` keeps its PostgreSQL cluster and state.
DATA_DIR ?= $(CURDIR)/data
PKGS := ./...

# Version information stamped into release binaries (internal/version) and the image's labels.
# Override for a release: make release VERSION=v1.2.0. BUILD_DATE honours SOURCE_DATE_EPOCH.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null && echo $$c || echo $$c-dirty; } || echo unknown)
BUILD_DATE ?= $(shell date -u -d "@$${SOURCE_DATE_EPOCH:-$$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
# Evaluate each once, so the binaries and the image carry the same values.
VERSION := $(VERSION)
COMMIT := $(COMMIT)
BUILD_DATE := $(BUILD_DATE)
RELEASE_DIR ?= bin/release
IMAGE ?= localhost/tenantmem
VERSION_PKG := github.com/tenantmem/tenantmem/internal/version
RELEASE_LDFLAGS := -s -w -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).date=$(BUILD_DATE)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: pgvector
pgvector: ## Install PostgreSQL 15+ with pgvector 0.8+ when missing: all that make run needs (idempotent; needs root to install).
	@bash deploy/install-pgvector.sh

.PHONY: deps
deps: pgvector ## Install what the tests need when missing: PostgreSQL 15+ with pgvector 0.8+, python3, chromium (idempotent; needs root to install).
	@bash deploy/install-tools.sh python3 chromium

.PHONY: image-deps
image-deps: ## Install podman, CA certificates and systemd-analyze when missing (for image-test and units-test).
	@bash deploy/install-tools.sh podman ca-certificates systemd file

.PHONY: run
run: pgvector ## Start a private PostgreSQL under ./data, init it, and serve the provisioning API (:8081) and router (:8080).
	$(GO) run ./cmd/devstack --data-dir "$(DATA_DIR)"

.PHONY: test
test: deps ## Install what the tests need, then vet and run every test with the race detector.
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

.PHONY: bench
bench: deps ## Run the benchmarks once each (see docs/benchmarks.md for the figures and knobs).
	$(GO) test -run '^$$' -bench . -timeout 90m $(PKGS)

# Knobs of bench-scale.
SCHEMA_TENANTS ?= 10000
SHARED_TENANTS ?= 1000000
WORKERS ?= 4

.PHONY: bench-scale
bench-scale: deps ## Fleet scale, not in CI: SCHEMA_TENANTS=10000 SHARED_TENANTS=1000000 WORKERS=4; about 20 minutes on 2 cores (docs/scaling.md).
	TENANTMEM_BENCH_SCALE=1 TENANTMEM_SCALE_SCHEMA_TENANTS=$(SCHEMA_TENANTS) TENANTMEM_SCALE_SHARED_TENANTS=$(SHARED_TENANTS) \
		TENANTMEM_SCALE_WORKERS=$(WORKERS) $(GO) test -run '^$$' -bench 'Scale$$' -benchtime 1x -timeout 300m ./internal/benchscale

# Knobs of bench-archive. BENCH_LOCK keeps two benchmark runs on one machine from overlapping.
ARCHIVE_CHUNKS ?= 20000
ARCHIVE_RESTORE_TIERS ?= schema
ARCHIVE_MOVES ?= shared,schema
IMPORT_CHUNKS ?= 20000
BENCH_LOCK ?= $(if $(wildcard /work/.bench.lock),/work/.bench.lock,/tmp/tenantmem-bench.lock)

.PHONY: bench-archive
bench-archive: deps ## Backup/restore vs pg_dump/pg_restore, moves under a writer, pre-embedded import (ARCHIVE_CHUNKS=20000; docs/benchmarks.md).
	flock $(BENCH_LOCK) sh -c 'uptime; TENANTMEM_BENCH_CHUNKS=$(ARCHIVE_CHUNKS) TENANTMEM_BENCH_RESTORE_TIERS=$(ARCHIVE_RESTORE_TIERS) \
		TENANTMEM_BENCH_MOVES=$(ARCHIVE_MOVES) TENANTMEM_BENCH_PROMOTE=1 \
		$(GO) test -run "^$$" -bench TenantArchive -benchtime 1x -timeout 120m ./internal/provision; rc=$$?; uptime; exit $$rc'
	flock $(BENCH_LOCK) sh -c 'uptime; TENANTMEM_BENCH_IMPORT_CHUNKS=$(IMPORT_CHUNKS) \
		$(GO) test -run "^$$" -bench ImportPreEmbedded -benchtime 1x -timeout 60m ./internal/httpapi; rc=$$?; uptime; exit $$rc'

.PHONY: chaos
chaos: deps ## Fault scenarios, longer (TENANTMEM_CHAOS_SECONDS, default 20 each) plus a full disk (root); prints the codes clients saw.
	TENANTMEM_CHAOS_REPORT=$(CURDIR)/bin/chaos-report.md $(GO) test -tags chaos -count=1 -timeout 60m -run 'TestChaosLong' -v ./internal/chaos | grep -v 'time='
	@mkdir -p bin; echo; cat bin/chaos-report.md

.PHONY: lint
lint: ## Run golangci-lint (.golangci.yml); installs v2.15.0 into $(go env GOPATH)/bin when missing.
	@command -v golangci-lint >/dev/null || test -x "$$($(GO) env GOPATH)/bin/golangci-lint" || \
		$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...

.PHONY: eval
eval: deps ## Retrieval quality: two known-item sets through the router, MRR/recall/nDCG@10 per mode vs BM25 (docs/benchmarks.md).
	$(GO) run ./cmd/eval

.PHONY: fuzz
fuzz: ## Fuzz the tenant id mapping and the chunker for 30 s each.
	$(GO) test -run '^$$' -fuzz FuzzName -fuzztime 30s ./internal/schema
	$(GO) test -run '^$$' -fuzz FuzzSplit -fuzztime 30s ./internal/chunk

.PHONY: screenshots
screenshots: deps ## Retake the operator console's screenshots in docs/console (the headless browser test, writing them).
	TENANTMEM_SCREENSHOTS_DIR=$(CURDIR)/docs/console $(GO) test -count=1 -run '^TestBrowser$$' ./internal/console

.PHONY: build
build: ## Build the router and provisioner binaries into ./bin.
	$(GO) build -o bin/ ./cmd/...

.PHONY: release
release: ## Build static router and provisioner binaries with version information into bin/release.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(RELEASE_DIR)/ ./cmd/router ./cmd/provisioner
	@$(RELEASE_DIR)/router --version && $(RELEASE_DIR)/provisioner --version

.PHONY: image
image: release ## Build the container image $(IMAGE):$(VERSION) with podman (no network inside the build).
	bash deploy/container/build.sh $(RELEASE_DIR) $(IMAGE):$(VERSION) $(VERSION) $(COMMIT) $(BUILD_DATE)

.PHONY: image-test
image-test: image-deps release ## Build the image under a test tag and inspect it: user, command, labels, files, static binaries.
	bash deploy/container/image-test.sh $(RELEASE_DIR) $(VERSION) $(COMMIT) $(BUILD_DATE)

.PHONY: units-test
units-test: image-deps release ## Check the systemd units: systemd-analyze verify and the security exposure score.
	bash deploy/systemd/units-test.sh $(RELEASE_DIR)

.PHONY: clean
clean: ## Stop nothing, delete ./bin and the make-run data folder.
	rm -rf bin "$(DATA_DIR)"
