#!/usr/bin/env bash
# A real cluster on this machine: redis-server, two silos and two gateways, all on 127.0.0.1, joined through Redis
# clustering (and keeping history and grain state in the same Redis). Prints the gateways' URLs and runs until
# interrupted (Ctrl-C), then stops everything it started, by PID, and removes its temporary folder.
#
#   deploy/local-cluster.sh                 # builds Silo and Gateway (Debug), then starts the cluster
#   CONFIGURATION=Release deploy/local-cluster.sh
#   deploy/local-cluster.sh --no-build      # use what is already built
#
# Needs the .NET 10 SDK, redis-server and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

configuration=${CONFIGURATION:-Debug}
build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[local-cluster] %s\n' "$*" >&2; }

for tool in dotnet redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool is required"; exit 1; }
done

work=$(mktemp -d /tmp/orleanspush-cluster.XXXXXX)
pids=()

stop_all() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    # Newest first: gateways drain, then silos leave the cluster (while Redis still answers), then Redis. Each gets
    # its shutdown time on SIGTERM, then SIGKILL.
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      pid=${pids[i]}
      kill -TERM "$pid" 2>/dev/null || continue
      log "stopping $pid"
      for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$work"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

if [ "$build" -eq 1 ]; then
  log "building Silo and Gateway ($configuration)"
  dotnet build Silo/Silo.csproj -c "$configuration" -nologo -v q >"$work/build-silo.log" 2>&1 \
    || { cat "$work/build-silo.log" >&2; exit 1; }
  dotnet build Gateway/Gateway.csproj -c "$configuration" -nologo -v q >"$work/build-gateway.log" 2>&1 \
    || { cat "$work/build-gateway.log" >&2; exit 1; }
fi

silo_dir="Silo/bin/$configuration/net10.0"
gateway_dir="Gateway/bin/$configuration/net10.0"
[ -f "$silo_dir/OrleansPush.Silo.dll" ] || { log "$silo_dir/OrleansPush.Silo.dll is missing: build first"; exit 1; }
[ -f "$gateway_dir/OrleansPush.Gateway.dll" ] || { log "$gateway_dir/OrleansPush.Gateway.dll is missing: build first"; exit 1; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || { log "redis-server did not start"; cat "$work/redis.log" >&2; exit 1; }
redis="127.0.0.1:$redis_port"

cluster_id="local-$$"
common=(
  "--OrleansPush:Cluster:ClusterId=$cluster_id"
  "--OrleansPush:Cluster:ServiceId=orleanspush-local"
  "--OrleansPush:Cluster:Clustering=Redis"
  "--OrleansPush:Cluster:Redis=$redis"
  "--OrleansPush:Storage:Provider=Redis"
  "--OrleansPush:Storage:Redis=$redis"
  "--OrleansPush:Storage:Prefix=$cluster_id"
)

# Each host runs from its project folder (its content root), where it finds appsettings.json and the gateway its
# wwwroot/; exec keeps the PID that is recorded.
start() {
  local dir=$1 dll=$2 name=$3
  shift 3
  (cd "$dir" && exec dotnet "bin/$configuration/net10.0/$dll" "$@") >"$work/$name.log" 2>&1 &
  pids+=($!)
  log "$name: pid $!, log $work/$name.log"
}

for i in 1 2; do
  start Silo OrleansPush.Silo.dll "silo-$i" "${common[@]}" \
    "--OrleansPush:Cluster:SiloPort=$(free_port)" "--OrleansPush:Cluster:GatewayPort=$(free_port)" \
    "--OrleansPush:Cluster:AdvertisedIP=127.0.0.1" "--OrleansPush:Cluster:SiloName=silo-$i"
done

urls=()
mqtt_ports=()
for i in 1 2; do
  port=$(free_port)
  mqtt_port=$(free_port)
  urls+=("http://127.0.0.1:$port")
  mqtt_ports+=("$mqtt_port")
  start Gateway OrleansPush.Gateway.dll "gateway-$i" "${common[@]}" \
    "--OrleansPush:Cluster:Mode=Cluster" "--urls=http://127.0.0.1:$port" \
    "--OrleansPush:Mqtt:Port=$mqtt_port" "--OrleansPush:Mqtt:BindAddress=127.0.0.1"
done

log "waiting for the gateways to be ready"
for url in "${urls[@]}"; do
  ready=0
  for _ in $(seq 120); do
    if curl -fsS -m 2 "$url/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.5
  done
  [ "$ready" -eq 1 ] || { log "$url did not become ready; see the logs in $work"; tail -n 20 "$work"/*.log >&2; exit 1; }
done

cat <<EOF

OrleansPush cluster ($cluster_id) is up: Redis $redis, 2 silos, 2 gateways.
  gateway 1: ${urls[0]}/   (WebSocket ${urls[0]/http/ws}/ws)
  gateway 2: ${urls[1]}/   (WebSocket ${urls[1]/http/ws}/ws)
  MQTT:      127.0.0.1:${mqtt_ports[0]} and 127.0.0.1:${mqtt_ports[1]} (TCP), /mqtt on each gateway (WebSocket)
  publish:   curl -s -X POST ${urls[0]}/api/topics/news -H 'Content-Type: application/json' -d '{"text":"hello"}'
  logs:      $work
Ctrl-C stops everything.
EOF

# Runs until interrupted, or until one of the processes dies (then everything is stopped).
wait -n "${pids[@]}" || true
log "a process exited; stopping the rest"
