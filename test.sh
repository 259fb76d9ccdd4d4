#!/usr/bin/env bash
# Runs every test of OrleansPush on a fresh machine: installs what the tests need if it is missing, starts it on
# loopback, runs all test projects, stops what it started, and ends with one line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")"

log() { printf '[test.sh] %s\n' "$*" >&2; }

# Debian packages the tests need: real Redis and PostgreSQL servers for the durable stores, an MQTT client nobody here
# wrote, Chromium for the browser test, yamllint for the deployment manifests.
packages=(redis-server postgresql mosquitto-clients chromium yamllint)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null || { log "could not install ${missing[*]}"; exit 1; }
fi

# npm packages of the browser test (playwright-core drives Debian's Chromium; it downloads no browser of its own) and of
# the Fossil delta interop test (fossil-delta). Installed when node_modules is missing or older than package.json or
# package-lock.json (a package was added since); node_modules is touched after each install to mark it current.
browser=tests/browser
if [ -f "$browser/package.json" ] && { [ ! -d "$browser/node_modules" ] || [ "$browser/package.json" -nt "$browser/node_modules" ] \
    || [ "$browser/package-lock.json" -nt "$browser/node_modules" ]; }; then
  log "installing the browser test's npm packages"
  (cd "$browser" && npm install --no-audit --no-fund --silent >/dev/null 2>&1 && touch node_modules) \
    || { log "npm install failed in $browser"; exit 1; }
fi

if ! command -v dotnet >/dev/null 2>&1; then
  log "the .NET 10 SDK is required (dotnet not on PATH)"
  exit 1
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
out=$(mktemp)
work=$(mktemp -d /tmp/orleanspush-test.XXXXXX)
started=()

cleanup() {
  for pid in "${started[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work" "$out"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Redis on loopback, nothing persisted: the store tests need a real server, not durability across its restarts.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$work" \
  >"$work/redis.log" 2>&1 &
started+=($!)
export ORLEANSPUSH_TEST_REDIS="127.0.0.1:$redis_port"

# PostgreSQL: a throwaway cluster in the work folder, run as the postgres user (it refuses root), trust auth on loopback.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
pg_port=$(free_port)
pg_user=postgres
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p "$work/pg" && chown postgres "$work" "$work/pg"
  as_pg() { runuser -u postgres -- "$@"; }
else
  pg_user=$(id -un)
  mkdir -p "$work/pg"
  as_pg() { "$@"; }
fi
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U "$pg_user" --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 \
  || { log "initdb failed:"; cat "$work/initdb.log" >&2; exit 1; }
as_pg "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$work/pg" \
  -c fsync=off -c max_connections=200 >"$work/postgres.log" 2>&1 &
started+=($!)
export ORLEANSPUSH_TEST_POSTGRES="Host=127.0.0.1;Port=$pg_port;Username=$pg_user;Database=postgres;Pooling=true;Maximum Pool Size=50"

for _ in $(seq 100); do
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1 && as_pg "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || { log "redis-server did not start"; cat "$work/redis.log" >&2; exit 1; }
as_pg "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" >/dev/null 2>&1 || { log "postgres did not start"; cat "$work/postgres.log" >&2; exit 1; }
log "redis on $ORLEANSPUSH_TEST_REDIS, postgres on 127.0.0.1:$pg_port"

log "building"
if ! dotnet build OrleansPush.sln -c Debug -nologo -v q 2>&1 | tee -a "$out" | grep -E ' error |Build succeeded|FAILED' ; then
  :
fi
if grep -q ' error ' "$out"; then
  log "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

log "running tests"
# The test projects run side by side, except the cluster fault tests: they time failovers of real processes, which
# should not compete for the 2 cores with everything else, so they run alone afterwards.
# Each failed test is shown with its message and the first lines of its stack trace and output (up to 60 lines), so a
# CI log says why; passed tests are counted, not listed.
report() {
  tee -a "$out" | awk '
    /^[[:space:]]+(Passed|Failed|Skipped) |^(Passed|Failed)!/ { shown = 0 }
    /^[[:space:]]+Failed |^[[:space:]]+Skipped / { shown = 60 }
    /^(Passed|Failed)!/ { print; next }
    shown > 0 { print; shown-- }'
}
dotnet test OrleansPush.sln --no-build -c Debug -nologo --filter 'FullyQualifiedName!~OrleansPush.Cluster.Tests' 2>&1 | report
status=${PIPESTATUS[0]}
dotnet test tests/Cluster.Tests --no-build -c Debug -nologo 2>&1 | report
cluster_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$cluster_status

passed=0 failed=0 skipped=0
while read -r f p s; do
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done < <(grep -E '^(Passed|Failed)!' "$out" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\1 \2 \3/')

# A test host that crashed leaves no summary line: count it as a failure rather than a pass.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
