#!/usr/bin/env bash
# Fuzzes the coordinator's HTTP API from its own OpenAPI document
# (GET /openapi.json) with schemathesis: every operation, positive and negative
# data, all checks (no 5xx, status codes, content types, headers and bodies as
# documented, bad data rejected, good data accepted, …), then stateful
# sequences (links inferred from `Location` headers).
#
#   loadtest/schemathesis.sh [schemathesis run options…]
#
# Starts a local cluster with `loadtest/cluster.sh up` (NATS, a coordinator on
# 127.0.0.1:${WEFT_HTTP_PORT:-8080}, two workers; logs in .weft-local/), runs
#
#   schemathesis run http://127.0.0.1:8080/openapi.json --checks all \
#     --max-examples ${WEFT_FUZZ_EXAMPLES:-50} --seed ${WEFT_FUZZ_SEED:-random} …
#
# and stops the cluster. Exits non-zero if schemathesis found anything.
#
#   WEFT_FUZZ_URL=http://host:port   fuzz a coordinator that is already running instead
#                                    (then WEFT_TOKEN must be an admin's token)
#   WEFT_TOKEN=…                     sent as `Authorization: Bearer …` on every request
#                                    (default for the local cluster: a fresh admin token)
#   WEFT_FUZZ_EXAMPLES=N             examples per operation (default 50)
#   WEFT_FUZZ_SEED=N                 reproduce a run (schemathesis prints its seed)
#
# The document declares the API's authentication; WEFT_TOKEN is sent and the
# authentication checked too (`ignored_auth`: requests without it must be
# refused).
#
# Settings (operations where schema-valid is not enough to be valid, the zip
# hooks) are in loadtest/schemathesis.toml and loadtest/schemathesis_hooks.py.
# schemathesis (pinned in loadtest/schemathesis-requirements.txt) is installed
# into the tools venv ($WEFT_TOOLS_DIR/venv, as .ci/install makes it) when
# missing. Reports (JUnit and a HAR of every request) go to
# .weft-local/schemathesis/ when this script starts the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mschemathesis:\033[0m %s\n' "$*"; }
die() { printf 'schemathesis: %s\n' "$*" >&2; exit 1; }

WEFT_TOOLS_DIR="${WEFT_TOOLS_DIR:-$HOME/.cache/weft}"
VENV="$WEFT_TOOLS_DIR/venv"
REQ="loadtest/schemathesis-requirements.txt"
STAMP="$VENV/.schemathesis-requirements"
if [ ! -x "$VENV/bin/schemathesis" ] || ! cmp -s "$REQ" "$STAMP" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  say "installing $(grep -v '^#' "$REQ" | xargs) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi

# Every /v1 request needs a token: the local cluster's admin gets this one.
if [ -z "${WEFT_FUZZ_URL:-}" ]; then
  WEFT_TOKEN="${WEFT_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}"
  export WEFT_TOKEN
elif [ -z "${WEFT_TOKEN:-}" ]; then
  die "set WEFT_TOKEN to an admin's token of the coordinator at $WEFT_FUZZ_URL"
fi
CLUSTER_PID=""
stop_cluster() {
  if [ -n "$CLUSTER_PID" ]; then
    kill -TERM "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
    CLUSTER_PID=""
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

if [ -n "${WEFT_FUZZ_URL:-}" ]; then
  BASE="${WEFT_FUZZ_URL%/}"
  REPORTS="$(mktemp -d)"
else
  BASE="http://127.0.0.1:${WEFT_HTTP_PORT:-8080}"
  CLUSTER_LOG="$(mktemp)"
  say "starting a local cluster (loadtest/cluster.sh up; its output in $CLUSTER_LOG)"
  loadtest/cluster.sh up >"$CLUSTER_LOG" 2>&1 &
  CLUSTER_PID=$!
  # The build may take minutes; the cluster is up when it says so.
  until grep -q ' up: NATS ' "$CLUSTER_LOG" 2>/dev/null; do
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$CLUSTER_LOG" >&2; die "the cluster did not start"; }
    sleep 1
  done
  REPORTS=".weft-local/schemathesis"
  mkdir -p "$REPORTS"
fi
curl -sf "$BASE/openapi.json" >/dev/null || die "no OpenAPI document at $BASE/openapi.json"

# Data for the fuzzer to find through the lists (and their links): deployed
# workflows, ended runs, runs waiting for a callback (which cancel and the
# callback operation, pinned to one of them in schemathesis.toml, then reach),
# a variable; and a workflow that runs any input, which the run operation is
# pinned to (else nearly every generated run is refused: no such workflow, not
# deployed, or input that does not match its schema).
CURL=(curl -sf)
if [ -n "${WEFT_TOKEN:-}" ]; then CURL+=(-H "Authorization: Bearer $WEFT_TOKEN"); fi
api() {  # api METHOD PATH [JSON] → the response body
  "${CURL[@]}" -X "$1" "$BASE$2" -H 'content-type: application/json' ${3:+-d "$3"}
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
say "seeding: deployed workflows, runs ended and waiting, a variable"
# Runs (pinned in schemathesis.toml): input → output, any input.
WEFT_FUZZ_ECHO=$(api POST /v1/workflows '{"name": "fuzz-echo", "timeout_ms": 10000, "nodes": [
    {"id": "in", "kind": "input"}, {"id": "out", "kind": "output", "config": {"fields": {"echo": "input"}}}],
  "edges": [{"from": "in", "to": "out"}]}' | field id)
api POST "/v1/workflows/$WEFT_FUZZ_ECHO/deploy" >/dev/null
export WEFT_FUZZ_ECHO
WF=$(api POST /v1/workflows "$(cat docs/examples/triage.json)" | field id)
api POST "/v1/workflows/$WF/deploy" >/dev/null
api POST "/v1/workflows/$WF/env" '{"name": "FUZZ_SEED", "value": "1", "notes": "seeded"}' >/dev/null
TICKET='{"input": {"subject": "Site is down", "body": "since 9:00", "customer_tier": "enterprise"}}'
api POST "/v1/workflows/$WF/runs?mode=sync" "$TICKET" >/dev/null
api POST "/v1/workflows/$WF/runs?mode=async" "$TICKET" >/dev/null
WAIT=$(api POST /v1/workflows '{"name": "fuzz-waits", "timeout_ms": 600000, "nodes": [
    {"id": "in", "kind": "input"},
    {"id": "call", "kind": "async_api", "timeout_ms": 600000, "config": {"url": "'"$BASE"'/healthz"}},
    {"id": "out", "kind": "output", "config": {"fields": {"got": "steps.call.output.callback"}}}],
  "edges": [{"from": "in", "to": "call"}, {"from": "call", "to": "out"}]}' | field id)
api POST "/v1/workflows/$WAIT/deploy" >/dev/null
for _ in 1 2 3; do
  WEFT_FUZZ_WAITING_RUN=$(api POST "/v1/workflows/$WAIT/runs?mode=async" '{"input": {}}' | field run_id)
done
export WEFT_FUZZ_WAITING_RUN

ARGS=(--checks all --max-examples "${WEFT_FUZZ_EXAMPLES:-50}" --request-timeout 30
  --report junit,har --report-dir "$REPORTS" --suppress-health-check too_slow)
if [ -n "${WEFT_FUZZ_SEED:-}" ]; then ARGS+=(--seed "$WEFT_FUZZ_SEED"); fi
AUTH=()
if [ -n "${WEFT_TOKEN:-}" ]; then
  AUTH=(-H "Authorization: Bearer $WEFT_TOKEN")
  say "schemathesis --config-file loadtest/schemathesis.toml run $BASE/openapi.json ${ARGS[*]} -H 'Authorization: Bearer ***' $*"
else
  say "schemathesis --config-file loadtest/schemathesis.toml run $BASE/openapi.json ${ARGS[*]} $* (no WEFT_TOKEN: no authentication)"
fi
set +e
"$VENV/bin/schemathesis" --config-file loadtest/schemathesis.toml run "$BASE/openapi.json" "${ARGS[@]}" ${AUTH[@]+"${AUTH[@]}"} "$@"
rc=$?
set -e
say "reports in $REPORTS/ (exit $rc)"
exit "$rc"
