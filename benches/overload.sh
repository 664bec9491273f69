#!/usr/bin/env bash
# The overload figures of BENCHMARKS.md (issue 7): the first 90% of a
# fleet's day offered as datagrams at OVERLOAD_RATE (default: as fast as the
# client can send), many times the engine's capacity, to `lastmile serve`
# under a memory bound, with ETA queries on the side; then the rest of the
# day over streams at a pace the engine keeps up with, to show it recovers
# (nothing shed, queries fast again).
#
#   benches/overload.sh CITY.graph TRACE.csv STOPS.csv [BOUND_MB] > overload.jsonl
#
# Environment: CONNS (16) connections; OVERLOAD_RATE; RECOVER_RATE (20000)
# pings/s of the second replay. One JSON line per phase on stdout (the
# replay report plus the server's memory figures). Build with
# `cargo build --release` first.
set -euo pipefail
graph=$1 trace=$2 stops=$3 bound=${4:-1024}
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/lastmile"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

printf '[limits]\nmax_memory_mb = %s\n' "$bound" > "$work/lastmile.toml"
"$bin" serve --graph "$graph" --config "$work/lastmile.toml" --listen 127.0.0.1:0 --dev \
  --data-dir "$work/data" > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
for _ in $(seq 600); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
conn=(--server "$(grep -o '127.0.0.1:[0-9]*' "$work/serve.out")"
      --fingerprint "$(grep -o 'sha256 [0-9a-f]*' "$work/serve.out" | cut -d' ' -f2)"
      --token "$(cat "$work/data/dev-token")")

lines=$(wc -l < "$trace")
head -n $((lines * 9 / 10)) "$trace" > "$work/overload.csv"
{ head -n 1 "$trace"; tail -n +$((lines * 9 / 10 + 1)) "$trace"; } > "$work/recovery.csv"

phase() { # $1: name; rest: replay flags
  local name=$1; shift
  echo "$name" >&2
  "$bin" replay "$work/$name.csv" "${conn[@]}" --connections "${CONNS:-16}" --queries 200 --json "$@" \
    > "$work/replay.json"
  "$bin" stats "${conn[@]}" > "$work/stats.json"
  python3 - "$name" "$bound" "$work" <<'EOF'
import json, sys
name, bound, work = sys.argv[1:]
r = json.load(open(f"{work}/replay.json"))
s = json.load(open(f"{work}/stats.json"))
r.update(phase=name, bound_mb=int(bound),
         server_rss_mb=round(s.get("process_rss_bytes", 0) / 2**20),
         server_peak_rss_mb=round(s.get("process_peak_rss_bytes", 0) / 2**20),
         memory_episodes=s.get("memory_episodes"), pings_shed_memory=s.get("pings_shed_memory"),
         engine_shed=s.get("engine_shed"))
print(json.dumps(r))
EOF
}

over=(--stops "$stops" --datagrams)
[ -n "${OVERLOAD_RATE:-}" ] && over+=(--rate "$OVERLOAD_RATE")
phase overload "${over[@]}"
phase recovery --rate "${RECOVER_RATE:-20000}"
kill -TERM "$pid"
wait "$pid" || true
