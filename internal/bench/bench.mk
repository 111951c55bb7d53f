# make bench: agentrelay side by side with a bare nats.go loop (see
# internal/bench and BENCHMARKS.md). Included from the root Makefile, which
# defines GO, LDFLAGS, VERSION_LDFLAGS and RELEASE_TAGS.

BENCH_OUT   ?= bench-results
BENCH_BIN   := $(BENCH_OUT)/bin
PARITY_FLAGS ?= -rounds 3 -events 20000
BENCH_FLAGS ?= -reps 5 -scale 0.5 -soak 60s

.PHONY: bench bench-bins bench-profile bench-suite bench-suite-profile bench-micro bench-first-run

# Every program of the parity bench, each a process of its own: the release
# build of agentrelay (as make build: stripped) and the same unstripped for
# `go tool nm`; the bare loop, the API and the ceiling with the same flags;
# nats-server at the version go.mod names.
bench-bins:
	@mkdir -p $(BENCH_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(RELEASE_TAGS) -ldflags "$(LDFLAGS)" -o $(BENCH_BIN)/agentrelay ./cmd/agentrelay
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(RELEASE_TAGS) -ldflags "$(VERSION_LDFLAGS)" -o $(BENCH_BIN)/agentrelay.syms ./cmd/agentrelay
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BENCH_BIN)/bareloop ./internal/bench/cmd/bareloop
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/bareloop.syms ./internal/bench/cmd/bareloop
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BENCH_BIN)/benchapi ./internal/bench/cmd/benchapi
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BENCH_BIN)/httpceiling ./internal/bench/cmd/httpceiling
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/nats-server github.com/nats-io/nats-server/v2
	$(GO) build -o $(BENCH_BIN)/relaybench ./internal/bench/cmd/relaybench

## bench: issue 21's side by side (~3 min on 2 cores after the build, ~1 min on a warm cache): agentrelay's
##        release binary and a bare nats.go loop, each its own process, against
##        nats-server (file store) and an API process answering 202 after 50 ms
##        (256 in flight) and 0 ms (64 in flight); 20,000 events published
##        before each worker starts, timed to the consumer's last ack; the
##        plain-HTTP ceiling in the same 3 interleaved rounds; medians; peak
##        RSS, CPU per event, idle RSS, the release binary's size and weight by
##        module, and the targets met or not. Then issue 20's many agents: the
##        same 20,000 events over 1,000 trigger ids, one answering 409, against
##        the same load on one healthy agent (PARITY_FLAGS='-parts agents' runs
##        only that). Raw runs in $(BENCH_OUT)/parity.json
bench: bench-bins
	GO=$(GO) $(BENCH_BIN)/relaybench parity -bin $(BENCH_BIN) $(PARITY_FLAGS) -json $(BENCH_OUT)/parity.json

## bench-profile: one round of bench, then heap profiles of both workers at idle and
##                under load (50 ms, 256 in flight): what agentrelay holds per
##                message that the bare loop does not; profiles in $(BENCH_OUT)/profiles
bench-profile: bench-bins
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(RELEASE_TAGS) -ldflags "$(VERSION_LDFLAGS)" -o $(BENCH_BIN)/relayprof ./internal/bench/cmd/relayprof
	CGO_ENABLED=0 $(GO) build -trimpath -tags benchprof -o $(BENCH_BIN)/bareloop-prof ./internal/bench/cmd/bareloop
	GO=$(GO) $(BENCH_BIN)/relaybench parity -bin $(BENCH_BIN) -rounds 1 -profile -profile-dir $(BENCH_OUT)/profiles -json $(BENCH_OUT)/parity-profile.json

## bench-suite: the older scenario suite (latency 0 to 1 s, replicas, poison, HTTPS,
##              ordered, soak; ~15 min): agentrelay's consumer package against a
##              reference loop, both as child processes of one test binary;
##              Markdown on stdout, raw runs in $(BENCH_OUT)/runs.json
bench-suite:
	@mkdir -p $(BENCH_OUT)
	$(GO) build -o $(BENCH_OUT)/relaybench ./internal/bench/cmd/relaybench
	$(BENCH_OUT)/relaybench $(BENCH_FLAGS) -json $(BENCH_OUT)/runs.json

## bench-micro: Go micro-benchmarks of the per-message hot path (reading and mapping
##              an event included: BENCHMARKS.md says what each measures)
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./consumer/ ./agentapi/ ./internal/telemetry/ ./internal/event/ ./internal/mapping/ ./internal/jsonvalue/

## bench-first-run: the first `make run` of a fresh machine, timed: empty module and
##                  build caches (in temporary folders), to the first accepted event
bench-first-run:
	internal/bench/firstrun.sh $(MAKE)

## bench-suite-profile: CPU and allocation profiles of every worker of the suite (first repetition)
bench-suite-profile:
	@mkdir -p $(BENCH_OUT)/suite-profiles
	$(GO) build -o $(BENCH_OUT)/relaybench ./internal/bench/cmd/relaybench
	$(BENCH_OUT)/relaybench -reps 1 -scale 0.5 -soak 20s -profile $(BENCH_OUT)/suite-profiles
