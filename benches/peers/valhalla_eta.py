"""Valhalla's travel time on the very estimates `lastmile eta-eval` judged,
for the side-by-side ETA figures in BENCHMARKS.md: from each judged ping to
its trip's end, Valhalla's `route` time (costing auto) against the time the
trip really took, beside lastmile's P50 on the same rows.

Not part of the build or of CI. Setup (Valhalla from PyPI, tiles from the
same PBF lastmile imports):

    pip install pyvalhalla-weekly
    python3 -c "from valhalla import get_config; import json; \
        json.dump(get_config(tile_dir='/tmp/vt', tile_extract=''), open('/tmp/vt.json','w'))"
    valhalla_build_tiles -c /tmp/vt.json ../shared/data/maps/porto_portugal.osm.pbf
    lastmile eta-eval porto.graph porto_taxi_trips_318.csv --predictions /tmp/p.csv
    python3 benches/peers/valhalla_eta.py /tmp/vt.json /tmp/p.csv
"""

import csv
import json
import statistics
import sys

from valhalla import Actor


def figures(rows, key):
    errors = [r[key] - r["actual"] for r in rows]
    n = len(errors)
    mae = sum(abs(e) for e in errors) / n
    return {
        "n": n,
        "mae_s": round(mae, 1),
        "median_abs_s": round(statistics.median(abs(e) for e in errors), 1),
        "bias_s": round(sum(errors) / n, 1),
        "too_low": round(sum(e < 0 for e in errors) / n, 3),
    }


def main():
    config, predictions = sys.argv[1], sys.argv[2]
    actor = Actor(config)
    rows = []
    failed = 0
    with open(predictions) as f:
        for r in csv.DictReader(f):
            request = {
                "locations": [
                    {"lat": float(r["lat"]), "lon": float(r["lon"])},
                    {"lat": float(r["dest_lat"]), "lon": float(r["dest_lon"])},
                ],
                "costing": "auto",
            }
            try:
                answer = json.loads(actor.route(json.dumps(request)))
                valhalla = answer["trip"]["summary"]["time"]
            except Exception:
                failed += 1
                continue
            rows.append({
                "actual": float(r["actual_s"]),
                "lastmile": float(r["p50_s"]),
                "valhalla": float(valhalla),
                "moving": r["moving"] == "true",
            })
    moving = [r for r in rows if r["moving"]]
    out = {"valhalla_failed": failed}
    for name, subset in (("all", rows), ("moving", moving)):
        if subset:
            out[name] = {
                "valhalla": figures(subset, "valhalla"),
                "lastmile_p50": figures(subset, "lastmile"),
                "mean_actual_s": round(sum(r["actual"] for r in subset) / len(subset), 1),
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
