#!/usr/bin/env bash
# First contact, timed: `make run` on empty Go module and build caches (a
# fresh machine, as far as Go is concerned) until the first accepted event
# in its log. Prints the time to the built binary and to that event.
# Usage: internal/bench/firstrun.sh [make]   (run from the repository root)
set -euo pipefail
MAKE=${1:-make}
work=$(mktemp -d)
mkdir -p "$work/mod" "$work/cache" "$work/data"
log=$work/run.log
: >"$log"
cleanup() {
	if [ -n "${pgid:-}" ]; then kill -INT -- "-$pgid" 2>/dev/null || true; sleep 2; kill -KILL -- "-$pgid" 2>/dev/null || true; fi
	chmod -R u+w "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s.%N)
GOMODCACHE=$work/mod GOCACHE=$work/cache GOFLAGS="$(go env GOFLAGS) -modcacherw" \
	setsid "$MAKE" run ARGS="--nats-port 0 --emulator-port 0 --metrics-port 0 --data-dir $work/data --log-format text" >"$log" 2>&1 &
pgid=$!
built=""
while :; do
	now=$(date +%s.%N)
	if [ -z "$built" ] && grep -q '^bin/agentrelay-dev dev' "$log"; then
		built=$(echo "$now - $start" | bc)
	fi
	if grep -q ' INFO accepted ' "$log"; then
		break
	fi
	if ! kill -0 "$pgid" 2>/dev/null; then
		echo "make run stopped before an accepted event:" >&2
		tail -20 "$log" >&2
		exit 1
	fi
	if [ "$(echo "$now - $start > 900" | bc)" = 1 ]; then
		echo "no accepted event within 900 s" >&2
		exit 1
	fi
	sleep 0.2
done
total=$(echo "$(date +%s.%N) - $start" | bc)
printf 'first make run on empty module and build caches: binary built after %.0f s, first accepted event after %.0f s\n' "$built" "$total"
