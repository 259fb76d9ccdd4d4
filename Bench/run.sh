#!/usr/bin/env bash
# The standard benchmark suite, unattended (about 20 minutes on 2 cores): builds Bench, Gateway and Silo in
# Release, starts every system under test itself (limit, signalr-redis + redis-server, orleanspush embedded and
# cluster), loads each, stops each by PID, and writes Bench/results/<yyyy-MM-dd>.md and .png.
# Extra arguments go to `OrleansPush.Bench run` (e.g. --systems limit,orleanspush --scenarios fanout-1000 --measure 5).
# `--scenarios churn` runs the churn scenario alone (issue 16; 3 minutes of churn plus settling and expiry, about 10
# minutes in all; `--churn-minutes 60` for the hour-long run) and writes Bench/results/<yyyy-MM-dd>-churn[-<label>].md.
# `--churn-gcdumps DIR` keeps the server's GC dumps of the start, memory, idle and end samples (dotnet-gcdump) to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
results=Bench/results
pidfile=$results/logs/servers.pid

# one socket per connection on both sides; raise what we may (containers often cap the hard limit)
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
echo "open files limit: $(ulimit -n)"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (the signalr-redis comparator's backplane)"
  apt-get install -y redis-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
fi

for project in Bench/Bench.csproj Gateway/Gateway.csproj Silo/Silo.csproj; do
  dotnet build "$project" -c Release -nologo -v quiet
done

# The benchmark stops its servers itself (finally, Ctrl-C, exit); this is the backstop should it die: only the PIDs it
# recorded, one by one.
cleanup() {
  if [[ -s $pidfile ]]; then
    while read -r pid; do
      [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    done < "$pidfile"
  fi
}
trap cleanup EXIT

# bounded even if something hangs: SIGINT makes the benchmark stop its servers (a long churn run gets its minutes on top)
limit=30
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  [[ ${args[i]} == --churn-minutes ]] && limit=$((30 + ${args[i + 1]%.*}))
done
timeout -s INT "${limit}m" dotnet Bench/bin/Release/net10.0/OrleansPush.Bench.dll run --out "$results" "$@"
