# make bench: agentrelay side by side with a bare nats.go reference loop
# (see internal/bench and BENCHMARKS.md). Include from the root Makefile:
#   -include internal/bench/bench.mk
# BENCH_FLAGS tunes a run, e.g. make bench BENCH_FLAGS='-scenarios a,b-backlog -reps 3'.

BENCH_FLAGS ?= -reps 5 -scale 0.5 -soak 60s
BENCH_OUT   ?= bench-results

.PHONY: bench bench-micro bench-profile

## bench: the end-to-end benchmark; Markdown tables on stdout, raw runs in $(BENCH_OUT)/runs.json
bench:
	@mkdir -p $(BENCH_OUT)
	$(GO) build -o $(BENCH_OUT)/relaybench ./internal/bench/cmd/relaybench
	$(BENCH_OUT)/relaybench $(BENCH_FLAGS) -json $(BENCH_OUT)/runs.json

## bench-micro: Go micro-benchmarks of the per-message hot path
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./consumer/ ./agentapi/ ./internal/telemetry/

## bench-profile: CPU and allocation profiles of every worker (first repetition) in $(BENCH_OUT)/profiles
bench-profile:
	@mkdir -p $(BENCH_OUT)/profiles
	$(GO) build -o $(BENCH_OUT)/relaybench ./internal/bench/cmd/relaybench
	$(BENCH_OUT)/relaybench -reps 1 -scale 0.5 -soak 20s -profile $(BENCH_OUT)/profiles
