#!/usr/bin/env bash
# Runs every test of OrleansPush on a fresh machine: installs what the tests need if it is missing, starts it on
# loopback, runs all test projects, stops what it started, and ends with one line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")"

log() { printf '[test.sh] %s\n' "$*" >&2; }

# Debian packages the tests need (none beyond the .NET SDK yet; Redis and PostgreSQL join with the durable stores).
packages=()
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null || { log "could not install ${missing[*]}"; exit 1; }
fi

if ! command -v dotnet >/dev/null 2>&1; then
  log "the .NET 10 SDK is required (dotnet not on PATH)"
  exit 1
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT

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
dotnet test OrleansPush.sln --no-build -c Debug -nologo 2>&1 | tee -a "$out" | grep -E '^\s+(Passed|Failed|Skipped) |^(Passed|Failed)!|Error Message' -A2 | grep -vE '^\s+Passed '
status=${PIPESTATUS[0]}

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
