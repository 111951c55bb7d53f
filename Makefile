# agentrelay — see README.md.
GO       ?= go
PKG      := github.com/agentrelay/agentrelay
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
VERSION_LDFLAGS := -X $(PKG)/internal/buildinfo.version=$(VERSION) -X $(PKG)/internal/buildinfo.revision=$(REVISION)
LDFLAGS  := -s -w $(VERSION_LDFLAGS)
# RELEASE_TAGS leave `dev` and `emulator` out of the binary (internal/cli/dev.go):
# no nats-server, no API emulator in the worker's process.
RELEASE_TAGS := release
# The release binary's size limit (issue 21), in bytes.
RELEASE_MAX_BYTES := 25000000
ARGS ?=
# DEV_GCFLAGS build bin/agentrelay-dev without optimisation or inlining: on a
# fresh machine the first make run compiles the standard library and
# nats-server, and this takes ~30 % of that CPU off (BENCHMARKS.md, first
# make run). A demo needs no optimised code; make run DEV_GCFLAGS= builds
# it optimised.
DEV_GCFLAGS ?= all=-N -l

.PHONY: run build release-check test test-packages faults lint tidy-check

## run: the embedded demo — NATS, the API emulator, the worker and a producer — from
##      bin/agentrelay-dev, the development build (release builds have no `dev`);
##      flags through ARGS, e.g. make run ARGS='--nats-port 0'. The first run on a
##      fresh machine downloads and compiles for a minute or two (see BENCHMARKS.md)
run:
	$(GO) build -gcflags '$(DEV_GCFLAGS)' -o bin/agentrelay-dev ./cmd/agentrelay
	bin/agentrelay-dev dev $(ARGS)

## build: the release binary in bin/: static, stripped, version and revision stamped,
##        without dev and the emulator (-tags release)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(RELEASE_TAGS) -ldflags "$(LDFLAGS)" -o bin/agentrelay ./cmd/agentrelay

## release-check: the release binary is at most 25 MB, links neither nats-server nor
##                the API emulator (by `go version -m`, and `go tool nm` on the same
##                build unstripped), and its dev and emulator say where they went
release-check: build
	@size=$$(stat -c %s bin/agentrelay); echo "bin/agentrelay: $$size bytes (limit $(RELEASE_MAX_BYTES))"; \
	  if [ $$size -gt $(RELEASE_MAX_BYTES) ]; then echo "release binary too large"; exit 1; fi
	@if $(GO) version -m bin/agentrelay | grep -E 'nats-io/nats-server'; then echo "release binary links nats-server"; exit 1; fi
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  CGO_ENABLED=0 $(GO) build -trimpath -tags $(RELEASE_TAGS) -ldflags "$(VERSION_LDFLAGS)" -o $$tmp/agentrelay ./cmd/agentrelay && \
	  if $(GO) tool nm $$tmp/agentrelay | grep -E ' (github.com/nats-io/nats-server/v2|$(PKG)/agentapi/emulator|$(PKG)/internal/natsembed)[./]' | head -3 | grep .; then \
	    echo "release binary links dev-only code"; exit 1; fi
	$(GO) test -count=1 -tags $(RELEASE_TAGS) -run '^TestRelease' ./internal/cli/
	@echo "release-check: ok"

# RACE_ENV: a race-enabled binary sleeps 1 s at exit by default, so that
# goroutines still running can report a race; a test binary has reported
# its tests' races by then (each test fails on its own), and the 40 test
# binaries of `make test` spent ~45 s of its wall time asleep.
RACE_ENV := GORACE=atexit_sleep_ms=0

# TEST_BIN: where go test keeps the test binaries it links (go test -o).
# go test links a package's test binary anew on every run, a second or
# more of CPU each for those linking nats-server, ~50 s of CPU for the
# whole module; with -o it relinks only a binary whose inputs changed (the
# same build-ID check as go build). ~900 MB on disk; `rm -rf bin` frees it.
TEST_BIN := $(CURDIR)/bin/test

## test: every package's tests, with the race detector, against real nats-server and HTTP, and beside
##       them the deploy files against the binary: about 75 s with a warm build cache on 2 cores.
##       The fault suite's short profiles are `make faults` (.ci/run runs both)
test:
	@$(MAKE) --no-print-directory -j2 test-packages deploy-test

# test-packages: the first half of `make test`. The deploy tests run beside
# it: they check files and a binary, not timings, and the package tests
# do not keep both cores busy throughout. No --output-sync: GNU
# make 3.81, which macOS ships, has none; go test writes whole lines, so
# the two outputs interleave by line.
test-packages:
	@mkdir -p $(TEST_BIN)/race
	$(RACE_ENV) $(GO) test -race -count=1 -parallel 8 -timeout 20m -o $(TEST_BIN)/race/ -skip '^TestFaultSuite$$' ./...

## faults: the fault suite's short profiles: real worker processes killed, the broker restarted, a
##         cluster's stream leaders killed, the API failing, with the default timings; about 2
##         minutes, on its own (its recovery targets are timings: it gets the machine to itself)
faults:
	@mkdir -p $(TEST_BIN)/race
	$(RACE_ENV) $(GO) test -race -count=1 -timeout 10m -o $(TEST_BIN)/race/ -run '^TestFaultSuite$$' ./internal/faultsuite/

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
##        phases, an outage, a 401 window), then a 40 s outage, the poison mix,
##        20 stalls of an ordered route's owner and 50 agents on one route;
##        checks the recovery targets (~11 min); AGENTRELAY_FAULT_SEED=<seed> replays a
##        run, CHAOSFLAGS=-race adds the race detector
CHAOSFLAGS ?=
chaos:
	AGENTRELAY_CHAOS=1 $(GO) test $(CHAOSFLAGS) -count=1 -timeout 60m -run '^TestChaos$$' -v ./internal/faultsuite/
-include internal/bench/bench.mk
