# agentrelay — see README.md.
GO       ?= go
PKG      := github.com/agentrelay/agentrelay
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X $(PKG)/internal/buildinfo.version=$(VERSION) -X $(PKG)/internal/buildinfo.revision=$(REVISION)

.PHONY: run build test lint tidy-check

## run: the embedded demo — NATS, the API emulator, the worker and a producer
run:
	$(GO) run ./cmd/agentrelay dev

## build: a static binary in bin/, version and revision stamped
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/agentrelay ./cmd/agentrelay

## test: every test, with the race detector, against real nats-server and HTTP (-parallel 8:
##       most tests wait on servers and timers, not the CPU, and the default is GOMAXPROCS); the fault suite
##       on its own (its recovery targets are timings: it gets the machine to itself); then the
##       deploy files against the binary
test:
	$(GO) test -race -count=1 -parallel 8 -timeout 20m -skip '^TestFaultSuite$$' ./...
	$(GO) test -race -count=1 -timeout 10m -run '^TestFaultSuite$$' ./internal/faultsuite/
	$(MAKE) deploy-test

# staticcheck, pinned, run with `go run` so nothing needs installing: the
# first run downloads and builds it (about 3 minutes here), later runs take
# it from the build cache.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

## lint: go mod tidy, go vet, gofmt and staticcheck must be clean (here and in deploy/)
lint: tidy-check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...
	$(MAKE) deploy-lint
	cd deploy && $(GO) run $(STATICCHECK) ./...

## tidy-check: go.mod and go.sum are tidy (prints the difference; changes nothing)
tidy-check:
	$(GO) mod tidy -diff

# Targets of the deploy/ module (image, manifests) live in their own file.
-include deploy/deploy.mk

.PHONY: chaos

## chaos: the long fault-injection suite with the default timings: 20,000 events
##        at 250/s against a single server and a 3-node cluster (replicas
##        SIGKILLed every 3-4.5 s, broker restarts or leader kills, API fault
##        phases, an outage, a 401 window), then a 40 s outage; checks the
##        recovery targets (~4.5 min); AGENTRELAY_FAULT_SEED=<seed> replays a
##        run, CHAOSFLAGS=-race adds the race detector
CHAOSFLAGS ?=
chaos:
	AGENTRELAY_CHAOS=1 $(GO) test $(CHAOSFLAGS) -count=1 -timeout 60m -run '^TestChaos$$' -v ./internal/faultsuite/
-include internal/bench/bench.mk
