"""Valhalla's map matcher on a lastmile trace, for the side-by-side figures
in BENCHMARKS.md: share of pings on the true OSM way, pings left unmatched,
and points per second on one thread (in process, through pyvalhalla's Actor).

Not part of the build or of CI. Setup (Valhalla from PyPI, tiles from the
same PBF lastmile imports):

    pip install pyvalhalla-weekly
    python3 -c "from valhalla import get_config; import json; \
        json.dump(get_config(tile_dir='/tmp/vt', tile_extract=''), open('/tmp/vt.json','w'))"
    valhalla_build_tiles -c /tmp/vt.json ../shared/data/maps/monaco.osm.pbf
    python3 benches/peers/valhalla_match.py /tmp/vt.json trace.csv [gps_accuracy]
"""

import csv
import json
import sys
import time
from collections import defaultdict

from valhalla import Actor


def main():
    config, trace = sys.argv[1], sys.argv[2]
    accuracy = float(sys.argv[3]) if len(sys.argv) > 3 else None
    actor = Actor(config)
    by_vehicle = defaultdict(list)
    with open(trace) as f:
        for row in csv.DictReader(f):
            by_vehicle[row["vehicle_id"]].append(row)
    pings = right = unmatched = 0
    elapsed = 0.0
    for rows in by_vehicle.values():
        rows.sort(key=lambda r: float(r["timestamp"]))
        shape = [{"lat": float(r["lat"]), "lon": float(r["lon"]), "time": float(r["timestamp"])} for r in rows]
        if accuracy is not None:
            for p in shape:
                p["accuracy"] = accuracy
        request = {
            "shape": shape,
            "costing": "auto",
            "shape_match": "map_snap",
            "filters": {"attributes": ["edge.way_id", "matched.edge_index", "matched.type"], "action": "include"},
        }
        if accuracy is not None:
            request["trace_options"] = {"gps_accuracy": accuracy}
        t0 = time.perf_counter()
        try:
            result = json.loads(actor.trace_attributes(json.dumps(request)))
        except RuntimeError:
            result = {"matched_points": [], "edges": []}
        elapsed += time.perf_counter() - t0
        edges = result.get("edges", [])
        points = result.get("matched_points", [])
        for r, m in zip(rows, points + [None] * (len(rows) - len(points))):
            pings += 1
            if m is None or m.get("type") == "unmatched" or "edge_index" not in m or m["edge_index"] >= len(edges):
                unmatched += 1
                continue
            if str(edges[m["edge_index"]].get("way_id")) == r["true_way_id"]:
                right += 1
    print(json.dumps({
        "pings": pings,
        "on_true_way": right / pings,
        "unmatched": unmatched / pings,
        "points_per_s": pings / elapsed,
    }))


if __name__ == "__main__":
    main()
