# pgkit: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GOLANGCI_LINT_VERSION ?= v2.15.0
GOVULNCHECK_VERSION ?= v1.1.4
TESTFLAGS ?=
FUZZTIME ?= 10s
# The repository's modules, each with its own go.mod: the library, the
# examples and the peer benchmarks. Only the first is what users require, so
# the others' dependencies (WebSockets, other cache libraries) stay out of
# users' module graphs.
MODULES := . examples internal/peerbench

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Check (and on Debian as root, install) PostgreSQL, Redis, promtool and Chromium for tests and the demo.
	@bash scripts/provision.sh

.PHONY: demo
demo: deps ## Run the tour of every feature (examples/tour) against a throwaway server (or PGKIT_DATABASE_URL).
	cd examples && $(GO) run ./tour

.PHONY: test
test: deps rules ## go vet, the alert rules, then every test of every module with the race detector against real PostgreSQL and Redis.
	@set -e; for m in $(MODULES); do echo "== go vet ($$m)"; (cd $$m && $(GO) vet ./...); done
	@set -e; for m in $(MODULES); do \
		echo "== go test ($$m)"; (cd $$m && $(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./...); \
	done

.PHONY: rules
rules: ## promtool check and unit-test examples/monitoring/alerts.yml.
	cd examples/monitoring && promtool check rules alerts.yml && promtool test rules alerts_test.yml

.PHONY: generate
generate: ## Regenerate examples/monitoring/alerts_test.yml and grafana-dashboard.json.
	python3 scripts/gen_alert_tests.py
	python3 scripts/gen_dashboard.py

.PHONY: bench
bench: deps ## Benchmarks, -count 6 (BENCH_COUNT; 12 for the tightest targets), about 25 min on 2 cores: raw output to bench/results.txt, pgkit/raw ratios with 95% intervals.
	bash scripts/bench.sh

.PHONY: bench-report
bench-report: ## BENCHMARKS.md and docs/bench/*.svg from bench/results.txt (run make bench first).
	$(GO) run ./internal/benchreport -in bench/results.txt -md BENCHMARKS.md -svg docs/bench

.PHONY: failover
failover: deps ## Failovers through a Patroni cluster under load (leader killed, synchronous and not; a switchover): Patroni's time, pgkit's, what failed, what was lost.
	$(GO) test -run '^$$' -bench '^BenchmarkFailover$$' -benchtime 1x -count $(or $(FAILOVER_COUNT),1) -timeout 30m .

.PHONY: fuzz
fuzz: ## Run every fuzz target (root and ./cache) for FUZZTIME each (default 10s; a count such as 20000x has no deadline); their corpora are in each package's testdata/fuzz.
	@for pkg in . ./cache; do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9]*' $$pkg/*_test.go | cut -d' ' -f2); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

.PHONY: loadtest
loadtest: deps ## The chat service on a throwaway server: 1,000 WebSocket clients x 10 messages (every ack checked in the database), then the pool test against raw pgxpool.
	bash examples/loadtest/run.sh

.PHONY: lint
lint: ## gofmt, golangci-lint and govulncheck (pinned versions; govulncheck needs vuln.go.dev).
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: run gofmt -w on the files above"; exit 1; }
	@set -e; for m in $(MODULES); do \
		echo "== lint ($$m)"; \
		(cd $$m && $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./... && \
			$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) ./...); \
	done

.PHONY: tidy
tidy: ## go mod tidy in every module, and gofmt -w.
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done
	gofmt -w .
