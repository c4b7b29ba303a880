#!/usr/bin/env bash
# Runs a local Weft cluster: NATS (JetStream), a coordinator and two workers.
#
#   loadtest/cluster.sh            # = demo
#   loadtest/cluster.sh demo       # start, deploy the demo workflow, run it once, stay up until Ctrl-C
#   loadtest/cluster.sh up         # start and stay up, no demo
#   loadtest/cluster.sh bench SCENARIO [seconds]
#                                  # start, measure, stop (see "bench" below)
#   loadtest/cluster.sh chaos [seconds]
#                                  # load with faults injected (see "chaos" below)
#
# Ports (override with env): WEFT_HTTP_PORT=8080, WEFT_NATS_PORT=4222,
# worker metrics on 9091, 9092, …; WEFT_WORKERS=2 workers. State and logs go
# to .weft-local/.
# Children run in their own sessions (setsid), so Ctrl-C reaches only this
# script, which stops them in order: workers drain first, NATS goes last.
# Build profile: WEFT_PROFILE=dev (default, shared with the tests) or release;
# WEFT_BIN_DIR=DIR runs the binaries in DIR instead of building.
# NATS runs with GOMAXPROCS = half the cores (at least 1; WEFT_NATS_GOMAXPROCS
# overrides): it shares this machine with the coordinator, the workers and
# the load generator, and Go's idle processors spinning for work cost it a
# third more CPU per message on 2 cores.
#
# bench: starts the cluster as `up` does (plus the mock model on 127.0.0.1:8089,
# answering in 500 ms, for `ai`), measures the two baselines (NATS
# request/reply, HTTP hello) and then SCENARIO (trivial, async, ai or fanout)
# with weft-load, each for `seconds` (default 10, at most 300) after a 2 s
# warmup, writes every JSON report, its table and the combined `report` into
# .weft-local/bench-<timestamp>/, and stops everything. The load is
# WEFT_BENCH_ARGS (default "--connections 32"; e.g. "--rate 5000" for an open
# loop). Every step is bounded by `timeout`. For figures worth publishing:
#   WEFT_PROFILE=release loadtest/cluster.sh bench trivial 10
# (with WEFT_WORKERS=1 on a 2-core machine: a worker runs an arbiter per core,
# so a second worker process there only adds threads competing for them).
# `up` and `demo` clear .weft-local/, earlier bench results included; bench
# keeps earlier bench-* directories.
#
# chaos: builds and runs `weft-load chaos`, which starts and owns its own
# cluster — NATS, a coordinator over a file SQLite store and three workers, on
# free loopback ports — drives async runs for `seconds` (default 40, at most
# 300; WEFT_CHAOS_ARGS adds flags, e.g. "--rate 200") while it SIGKILLs a
# worker, SIGTERMs one, restarts NATS and SIGKILLs and restarts the
# coordinator, cycling; then waits (at most 60 s) for every accepted run to
# end and prints the report (also chaos.json and chaos.txt in
# .weft-local/chaos-<timestamp>/, with the logs). Exits non-zero if a run was lost.
set -euo pipefail
# WEFT_BIN_DIR is taken relative to where the script was started.
if [ -n "${WEFT_BIN_DIR:-}" ]; then WEFT_BIN_DIR="$(cd "$WEFT_BIN_DIR" && pwd)"; fi
cd "$(dirname "$0")/.."
MODE="${1:-demo}"
HTTP_PORT="${WEFT_HTTP_PORT:-8080}"
NATS_PORT="${WEFT_NATS_PORT:-4222}"
WORKERS="${WEFT_WORKERS:-2}"
PROFILE="${WEFT_PROFILE:-dev}"
STATE=".weft-local"
BASE="http://127.0.0.1:$HTTP_PORT"

say() { printf '\033[1mweft:\033[0m %s\n' "$*"; }
die() { printf 'weft: %s\n' "$*" >&2; exit 1; }

case "$MODE" in demo|up|bench|chaos) ;; *) die "unknown mode '$MODE' (demo, up, bench or chaos)";; esac
PORTS=("$HTTP_PORT" "$NATS_PORT" 9091 9092)
BINS=(--bin weft-coordinator --bin weft-worker)
if [ "$MODE" = bench ]; then
  SCENARIO="${2:-}"
  BENCH_SECS="${3:-10}"
  case "$SCENARIO" in trivial|async|ai|fanout) ;; *) die "bench needs a scenario: trivial, async, ai or fanout";; esac
  [[ "$BENCH_SECS" =~ ^[0-9]+$ ]] && [ "$BENCH_SECS" -ge 1 ] && [ "$BENCH_SECS" -le 300 ] \
    || die "bench seconds must be a whole number from 1 to 300"
  command -v timeout >/dev/null || die "timeout (coreutils) is needed"
  [ "$SCENARIO" = ai ] && PORTS+=(8089)
  BINS+=(--bin weft-load --bin weft-mock-model)
fi
if [ "$MODE" = chaos ]; then
  CHAOS_SECS="${2:-40}"
  [[ "$CHAOS_SECS" =~ ^[0-9]+$ ]] && [ "$CHAOS_SECS" -ge 1 ] && [ "$CHAOS_SECS" -le 300 ] \
    || die "chaos seconds must be a whole number from 1 to 300"
  command -v timeout >/dev/null || die "timeout (coreutils) is needed"
  PORTS=()  # weft-load chaos picks free ports itself
  BINS+=(--bin weft-load)
fi
for tool in curl python3 $([ -n "${WEFT_BIN_DIR:-}" ] || echo cargo); do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in ${PORTS[@]+"${PORTS[@]}"}; do
  if port_busy "$p"; then die "port $p is in use; stop what holds it or set WEFT_HTTP_PORT / WEFT_NATS_PORT"; fi
done

. .ci/install
if [ -n "${WEFT_BIN_DIR:-}" ]; then
  # Prebuilt binaries (e.g. an earlier commit's, to compare two builds in the
  # same hour on the same machine): no build.
  TARGET="$WEFT_BIN_DIR"
  for b in "${BINS[@]}"; do
    [ "$b" = --bin ] || [ -x "$TARGET/$b" ] || die "WEFT_BIN_DIR has no $b"
  done
else
  say "building (cargo build --profile $PROFILE)"
  cargo build --profile "$PROFILE" "${BINS[@]}"
  TARGET="${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
fi

if [ "$MODE" = chaos ]; then
  OUT="$STATE/chaos-$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$OUT"
  read -r -a CHAOS_ARGS <<<"${WEFT_CHAOS_ARGS:-}"
  # Load + settle (60 s) + submission retries (30 s) + start and stop, with slack.
  LIMIT=$((CHAOS_SECS + 60 + 30 + 90))
  say "chaos: ${CHAOS_SECS} s of load with faults; state and logs in $OUT/"
  set +e
  timeout --foreground "$LIMIT" "$TARGET/weft-load" chaos --duration "${CHAOS_SECS}s" \
    --nats-server "$WEFT_NATS_SERVER" --bin-dir "$TARGET" --state-dir "$OUT" \
    --settle 60s --json "$OUT/chaos.json" ${CHAOS_ARGS[@]+"${CHAOS_ARGS[@]}"} | tee "$OUT/chaos.txt"
  rc=${PIPESTATUS[0]}
  set -e
  say "chaos: report in $OUT/chaos.json (exit $rc)"
  exit "$rc"
fi

if [ "$MODE" = bench ]; then
  # Keep the results of earlier benches.
  mkdir -p "$STATE" && find "$STATE" -mindepth 1 -maxdepth 1 ! -name 'bench-*' -exec rm -rf {} +
  mkdir -p "$STATE/nats"
else
  rm -rf "$STATE" && mkdir -p "$STATE/nats"
fi
PIDS=()  # in start order: NATS, coordinator, workers
EXTRA_PIDS=()  # the mock model (bench ai): stopped before the cluster
cleanup() {
  trap - INT TERM EXIT
  # Output piped to a reader that Ctrl-C also stopped (`| tee`) must not
  # kill the cleanup with SIGPIPE half-way: the processes would outlive it.
  trap '' PIPE
  for pid in ${EXTRA_PIDS[@]+"${EXTRA_PIDS[@]}"}; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  say "stopping: workers drain first, then the coordinator, then NATS"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    # Workers go together; each later stage waits for the one before.
    if [ "$i" -le 2 ]; then
      for ((j = ${#PIDS[@]} - 1; j >= i; j--)); do wait "${PIDS[$j]}" 2>/dev/null || true; done
    fi
  done
  say "stopped; logs are in $STATE/"
}
trap cleanup INT TERM EXIT

# The first admin's token: yours if WEFT_TOKEN is set, else a fresh one.
# weft-load and the curl commands below send it as a bearer token.
WEFT_TOKEN="${WEFT_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}"
export WEFT_TOKEN
(umask 077 && printf '%s\n' "$WEFT_TOKEN" >"$STATE/admin-token")
AUTH=(-H "Authorization: Bearer $WEFT_TOKEN")

CORES="$(nproc 2>/dev/null || echo 2)"
NATS_PROCS="${WEFT_NATS_GOMAXPROCS:-$(( CORES / 2 > 0 ? CORES / 2 : 1 ))}"
GOMAXPROCS="$NATS_PROCS" setsid "$WEFT_NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
PIDS+=($!)
export WEFT_NATS_URL="nats://127.0.0.1:$NATS_PORT"
WEFT_HTTP_ADDR="127.0.0.1:$HTTP_PORT" WEFT_DATABASE_URL="sqlite://$STATE/weft.db" WEFT_ADMIN_TOKEN="$WEFT_TOKEN" \
  setsid "$TARGET/weft-coordinator" >"$STATE/coordinator.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 "$WORKERS"); do
  WEFT_WORKER_ID="worker-$i" WEFT_METRICS_ADDR="127.0.0.1:909$i" \
    setsid "$TARGET/weft-worker" >"$STATE/worker-$i.log" 2>&1 &
  PIDS+=($!)
done

say "waiting for the coordinator and $WORKERS worker(s)"
for _ in $(seq 1 100); do
  n=$(curl -sf "${AUTH[@]}" "$BASE/v1/workers" 2>/dev/null | python3 -c 'import sys,json; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null || echo 0)
  [ "$n" = "$WORKERS" ] && break
  sleep 0.1
done
[ "${n:-0}" = "$WORKERS" ] || die "cluster did not come up; see $STATE/*.log"
say "up: NATS $WEFT_NATS_URL, coordinator $BASE, $WORKERS worker(s) (worker-1…)"

if [ "$MODE" = demo ]; then
  WF=$(curl -sf "${AUTH[@]}" -X POST "$BASE/v1/workflows" -H 'content-type: application/json' --data @docs/examples/triage.json \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
  curl -sf "${AUTH[@]}" -X POST "$BASE/v1/workflows/$WF/deploy" >/dev/null
  say "deployed docs/examples/triage.json as workflow $WF; running it once:"
  curl -s "${AUTH[@]}" -X POST "$BASE/v1/workflows/$WF/runs?mode=sync" -H 'content-type: application/json' \
    -d '{"input": {"subject": "Site is down", "body": "Customers cannot log in since 9:00", "customer_tier": "enterprise"}}' \
    | python3 -c 'import sys,json; r=json.load(sys.stdin); print(json.dumps({k: r[k] for k in ("id","status","output","attempts")}, indent=2))'
  cat <<TRY

Try next (you are the admin; the token is also in $STATE/admin-token):
  export WEFT_TOKEN='$WEFT_TOKEN'
  # run it synchronously
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" -X POST '$BASE/v1/workflows/$WF/runs' -H 'content-type: application/json' \\
    -d '{"input": {"subject": "Invoice question", "body": "Where is my invoice?"}}'
  # run it asynchronously, then poll the status URL it returns
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" -X POST '$BASE/v1/workflows/$WF/runs?mode=async' -H 'content-type: application/json' \\
    -d '{"input": {"subject": "Outage", "body": "everything is down"}}'
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" '$BASE/v1/runs?workflow_id=$WF&limit=5'
  # input that does not match the schema is a 400 naming the field
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" -X POST '$BASE/v1/workflows/$WF/runs' -H 'content-type: application/json' -d '{"input": {"subject": 3}}'
  # an API key that can only run this workflow (its secret is shown once)
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" -X POST '$BASE/v1/workflows/$WF/keys' -H 'content-type: application/json' -d '{"name": "demo"}'
  # the audit log
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" '$BASE/v1/audit?limit=5'
  # the workers, and the metrics
  curl -s -H "Authorization: Bearer \$WEFT_TOKEN" '$BASE/v1/workers'
  curl -s '$BASE/metrics' | grep weft_runs
  curl -s 'http://127.0.0.1:9091/metrics' | grep weft_node

Press Ctrl-C to stop everything.
TRY
fi

if [ "$MODE" = bench ]; then
  OUT="$STATE/bench-$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$OUT"
  read -r -a LOAD_ARGS <<<"${WEFT_BENCH_ARGS:---connections 32}"
  COMMON=(--duration "${BENCH_SECS}s" --warmup 2s --timeout 30s "${LOAD_ARGS[@]}")
  # Each step: warmup + measurement + at most the 30 s drain, plus slack;
  # --foreground lets Ctrl-C reach weft-load, which then stops at once.
  LIMIT=$((BENCH_SECS + 2 + 30 + 15))
  step() {  # step NAME weft-load-args…: runs it bounded, keeps its table and JSON
    local name="$1"; shift
    say "bench: $name"
    timeout --foreground "$LIMIT" "$TARGET/weft-load" "$@" "${COMMON[@]}" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
  }
  EXTRA=()
  if [ "$SCENARIO" = ai ]; then
    setsid "$TARGET/weft-mock-model" --listen 127.0.0.1:8089 --latency fixed:500ms >"$STATE/mock-model.log" 2>&1 &
    EXTRA_PIDS+=($!)
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8089/healthz >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf http://127.0.0.1:8089/healthz >/dev/null 2>&1 || die "mock model did not come up; see $STATE/mock-model.log"
    EXTRA=(--model-url http://127.0.0.1:8089/v1)
  fi
  step nats-baseline nats-baseline --nats-url "$WEFT_NATS_URL"
  step http-baseline http-baseline
  step "$SCENARIO" run --scenario "$SCENARIO" --url "$BASE" ${EXTRA[@]+"${EXTRA[@]}"}
  say "bench: combined report"
  "$TARGET/weft-load" report --inputs "$OUT/nats-baseline.json" "$OUT/http-baseline.json" "$OUT/$SCENARIO.json" \
    --json "$OUT/report.json" | tee "$OUT/report.txt"
  say "bench: reports in $OUT/"
  exit 0
fi
wait
