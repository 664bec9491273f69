#!/usr/bin/env bash
# The durability figures of BENCHMARKS.md (issue 7): a fleet's day replayed
# into `lastmile serve` with its routes assigned (each acknowledged once
# durable), the server's checkpoint size and time, then a SIGTERM (drain,
# flush, final checkpoint) and a restart: how long until it listens with
# every vehicle restored, and the first ETA query's answer and latency.
#
#   benches/restart.sh CITY.graph TRACE.csv STOPS.csv > restart.json
#
# Environment: CONNS (16) replay connections; RATE paces the replay; and
# SINGLE (1000) routes assigned afterwards by one dispatcher with one
# request in flight, the latency of a lone acknowledged command.
# Build with `cargo build --release` first. Progress goes to stderr; one
# JSON object to stdout.
set -euo pipefail
graph=$1 trace=$2 stops=$3
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/lastmile"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"' EXIT

start_server() { # $1: log name; sets pid, addr, fp, token
  "$bin" serve --graph "$graph" --listen 127.0.0.1:0 --dev --data-dir "$work/data" \
    > "$work/$1.out" 2> "$work/$1.err" &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(grep -o '127.0.0.1:[0-9]*' "$work/$1.out")
  fp=$(grep -o 'sha256 [0-9a-f]*' "$work/$1.out" | cut -d' ' -f2)
  token=$(cat "$work/data/dev-token")
}
conn() { echo --server "$addr" --fingerprint "$fp" --token "$token"; }
metric() { "$bin" stats $(conn) | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }

start_server first
echo "replaying $trace with the routes of $stops" >&2
args=(replay "$trace" $(conn) --stops "$stops" --connections "${CONNS:-16}" --json)
[ -n "${RATE:-}" ] && args+=(--rate "$RATE")
"$bin" "${args[@]}" > "$work/replay.json"

# One dispatcher, one request in flight: the latency of a lone durable command.
# Other vehicles and stops than the replay's (ids prefixed with a 9).
head -n $((${SINGLE:-1000} + 1)) "$stops" | sed 's/veh-/veh-9/g' > "$work/single.csv"
single=$("$bin" assign "$work/single.csv" $(conn) --in-flight 1)

# A periodic checkpoint of the loaded engine (the server writes one every
# checkpoint_every_s; wait for one after the replay).
before=$(metric checkpoints_written)
for _ in $(seq 1200); do [ "$(metric checkpoints_written)" -gt "$before" ] && break; sleep 0.1; done
"$bin" stats $(conn) > "$work/stats.json"

echo "SIGTERM" >&2
t0=$(date +%s%N)
kill -TERM "$pid"
wait "$pid" || true
stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ckpt_bytes=$(stat -c %s "$work/data/checkpoint.lmck")

echo "restarting" >&2
t0=$(date +%s%N)
start_server second
listen_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
vehicle=$(awk -F, 'NR == 2 { print $1 }' "$stops" | tr -cd 0-9 | sed 's/^0*//; s/^$/0/')
q0=$(date +%s%N)
eta=$("$bin" eta --vehicle "$vehicle" $(conn) --json)
eta_ms=$(( ($(date +%s%N) - q0) / 1000000 ))

python3 - "$work" "$stop_ms" "$listen_ms" "$eta_ms" "$ckpt_bytes" "$single" "$eta" <<'EOF'
import json, re, sys
work, stop_ms, listen_ms, eta_ms, ckpt_bytes, single, eta = sys.argv[1:]
replay = json.load(open(f"{work}/replay.json"))
stats = json.load(open(f"{work}/stats.json"))
err = re.sub(r"\x1b\[[0-9;]*m", "", open(f"{work}/second.err").read())
rec = re.search(r"state recovered.*?vehicles=(\d+).*? ms=\"?(\d+)", err)
ready = re.search(r"ready in (\d+) ms", open(f"{work}/second.out").read())
lone = re.search(r"p50 (\d+) µs, p99 (\d+) µs", single)
etas = json.loads(eta)
print(json.dumps({
    "replay": replay,
    "vehicles": stats.get("engine_vehicles"),
    "checkpoint_vehicles": stats.get("checkpoint_vehicles"),
    "checkpoint_bytes": int(ckpt_bytes),
    "checkpoint_ms": stats.get("checkpoint_ms"),
    "store_commit_p99_us": stats.get("store_commit_p99_us"),
    "journal_commands": stats.get("journal_commands"),
    "journal_flushes": stats.get("journal_flushes"),
    "lone_command_p50_us": int(lone.group(1)) if lone else None,
    "lone_command_p99_us": int(lone.group(2)) if lone else None,
    "sigterm_to_exit_ms": int(stop_ms),
    "restored_vehicles": int(rec.group(1)) if rec else None,
    "recover_ms": int(rec.group(2)) if rec else None,
    "ready_ms": int(ready.group(1)) if ready else None,
    "start_to_listening_ms": int(listen_ms),
    "first_eta_query_ms": int(eta_ms),
    "first_eta_stops": len(etas.get("stops") or []),
}))
EOF
