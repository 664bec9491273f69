#!/usr/bin/env bash
# The service benchmark of BENCHMARKS.md: `lastmile replay` against
# `lastmile serve` on loopback, over streams and datagrams with 1, 16 and 256
# connections, with the engine (matching, ETAs, detectors on) and with the
# counting sink (the front end's own ceiling), with an ETA query load.
#
#   benches/service.sh CITY.graph TRACE.csv STOPS.csv [QUERIES_PER_S] > results.jsonl
#
# Environment: SINKS ("engine counting"), MODES ("streams datagrams"),
# CONNS ("1 16 256") narrow the matrix; RATE paces the replay (pings/s).
# Each run starts a fresh server (one JSON line per run on stdout: the replay
# report plus `sink` and `connections`). Build with `cargo build --release` first.
set -euo pipefail
graph=$1 trace=$2 stops=$3 queries=${4:-200}
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/lastmile"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

for sink in ${SINKS:-engine counting}; do
  for mode in ${MODES:-streams datagrams}; do
    for conns in ${CONNS:-1 16 256}; do
      flags=(--graph "$graph" --listen 127.0.0.1:0 --dev --data-dir "$work/data")
      [ "$sink" = counting ] && flags+=(--sink)
      "$bin" serve "${flags[@]}" > "$work/serve.out" 2> "$work/serve.err" &
      pid=$!
      for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
      addr=$(grep -o '127.0.0.1:[0-9]*' "$work/serve.out")
      fp=$(grep -o 'sha256 [0-9a-f]*' "$work/serve.out" | cut -d' ' -f2)
      args=(replay "$trace" --server "$addr" --fingerprint "$fp" --token "$(cat "$work/data/dev-token")"
            --connections "$conns" --queries "$queries" --json)
      [ "$mode" = datagrams ] && args+=(--datagrams)
      [ -n "${RATE:-}" ] && args+=(--rate "$RATE")
      [ "$sink" = engine ] && args+=(--stops "$stops")
      "$bin" "${args[@]}" | sed "s/^{/{\"sink\":\"$sink\",\"rate\":\"${RATE:-max}\",/"
      kill -TERM $pid; wait $pid 2>/dev/null || true
    done
  done
done
