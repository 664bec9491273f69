"""Valhalla and lastmile side by side on the Kubička et al. tracks, through the
path a user takes: each track's road network written as an OSM PBF file (one
way per pair of nodes joined by arcs, numbered from 1 in order of first
appearance, `oneway=yes` drawn in the arc's direction where the data has one
direction only: the same roads `lastmile evaluate --kubicka` builds), imported
by each engine, then the track matched.

Scored by OSM way (the pair of nodes), as a user of either engine sees it: the
share of pings whose matched way is a way of the true route, over all pings and
over the "on-route" pings (fix within 30 m of the true route's arcs; a van
parked in a car park off the network has no right answer).

Not part of the build or of CI. Setup:

    pip install pyvalhalla-weekly osmium
    cargo build --release
    python3 benches/peers/kubicka_peers.py $LASTMILE_DATA/kubicka-2015 /tmp/kubicka-peers [FIRST LAST]

Prints one line per track and the totals for tracks 00-24, 25-49 and all.
"""

import csv
import gzip
import json
import math
import os
import subprocess
import sys
import time

import osmium
from valhalla import Actor, get_config

LASTMILE = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "lastmile")


def read(path):
    with gzip.open(path, "rt") as f:
        return [line.split() for line in f if line.strip()]


def network(d, tid):
    nodes = [(float(v[0]), float(v[1])) for v in read(f"{d}/{tid}/{tid}.nodes.gz")]  # lon lat
    arcs = [(int(float(v[0])), int(float(v[1]))) for v in read(f"{d}/{tid}/{tid}.arcs.gz")]
    pair_of, pairs = {}, []
    for i, (a, b) in enumerate(arcs):
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if key not in pair_of:
            pair_of[key] = len(pairs)
            pairs.append([key, None, None])
        slot = 1 if a < b else 2
        if pairs[pair_of[key]][slot] is None:
            pairs[pair_of[key]][slot] = i
    ways = []  # (way id, [n1, n2], oneway)
    arc_way = {}
    for k, (key, fwd, bwd) in enumerate(pairs):
        lo, hi = key
        if fwd is not None:
            ways.append((k + 1, [lo, hi], bwd is None))
        else:
            ways.append((k + 1, [hi, lo], True))
        for a in (fwd, bwd):
            if a is not None:
                arc_way[a] = k + 1
    return nodes, arcs, ways, arc_way


def write_pbf(path, nodes, ways):
    if os.path.exists(path):
        os.remove(path)
    w = osmium.SimpleWriter(path)
    for i, (lon, lat) in enumerate(nodes):
        w.add_node(osmium.osm.mutable.Node(id=i + 1, location=(lon, lat), version=1, tags={}))
    for wid, ns, oneway in ways:
        tags = {"highway": "unclassified"}
        if oneway:
            tags["oneway"] = "yes"
        w.add_way(osmium.osm.mutable.Way(id=wid, nodes=[n + 1 for n in ns], version=1, tags=tags))
    w.close()


def seg_dist_m(p, a, b):
    # Equirectangular projection around p: metres to segment a-b.
    k = math.cos(math.radians(p[1])) * 111_320.0
    ax, ay = (a[0] - p[0]) * k, (a[1] - p[1]) * 110_540.0
    bx, by = (b[0] - p[0]) * k, (b[1] - p[1]) * 110_540.0
    dx, dy = bx - ax, by - ay
    L = dx * dx + dy * dy
    t = 0.0 if L == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / L))
    return math.hypot(ax + t * dx, ay + t * dy)


def main():
    data, work = sys.argv[1], sys.argv[2]
    first, last = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (0, 49)
    os.makedirs(work, exist_ok=True)
    totals = {}
    for n in range(first, last + 1):
        tid = f"{n:08d}"
        nodes, arcs, ways, arc_way = network(data, tid)
        track = [(float(v[0]), float(v[1]), float(v[2])) for v in read(f"{data}/{tid}/{tid}.track.gz")]
        route = [int(float(v[0])) for v in read(f"{data}/{tid}/{tid}.route.gz")]
        true_ways = {arc_way[a] for a in route if a in arc_way}
        segs = [(nodes[arcs[a][0]], nodes[arcs[a][1]]) for a in set(route) if a < len(arcs)]
        on_route = [min(seg_dist_m((lo, la), s[0], s[1]) for s in segs) <= 30.0 for lo, la, _ in track]
        pbf = f"{work}/{tid}.osm.pbf"
        write_pbf(pbf, nodes, ways)
        # lastmile: import + match, as a user does.
        g, tcsv, out = f"{work}/{tid}.graph", f"{work}/{tid}.csv", f"{work}/{tid}.lm.csv"
        with open(tcsv, "w") as f:
            f.write("vehicle_id,timestamp,lat,lon\n")
            for lo, la, t in track:
                f.write(f"v,{t!r},{la!r},{lo!r}\n")
        subprocess.run([LASTMILE, "import", pbf, "--out", g], check=True, capture_output=True)
        subprocess.run([LASTMILE, "match", g, tcsv, "--out", out], check=True, capture_output=True)
        with open(out) as f:
            lm = [int(r["way_id"]) if r["way_id"] else None for r in csv.DictReader(f)]
        # Valhalla: tiles from the same file, trace_attributes (map_snap, auto).
        tiles = f"{work}/{tid}.tiles"
        os.makedirs(tiles, exist_ok=True)
        cfg = get_config(tile_dir=tiles, tile_extract="")
        cfgp = f"{work}/{tid}.valhalla.json"
        json.dump(cfg, open(cfgp, "w"))
        subprocess.run(["valhalla_build_tiles", "-c", cfgp, pbf], check=True, capture_output=True)
        actor = Actor(cfgp)
        shape = [{"lat": la, "lon": lo, "time": t} for lo, la, t in track]
        req = {"shape": shape, "costing": "auto", "shape_match": "map_snap",
               "filters": {"attributes": ["edge.way_id", "matched.edge_index", "matched.type"], "action": "include"}}
        try:
            res = json.loads(actor.trace_attributes(json.dumps(req)))
        except RuntimeError:
            res = {"matched_points": [], "edges": []}
        edges, pts = res.get("edges", []), res.get("matched_points", [])
        vh = []
        for m in pts + [None] * (len(track) - len(pts)):
            if m is None or m.get("type") == "unmatched" or m.get("edge_index", 1 << 30) >= len(edges):
                vh.append(None)
            else:
                vh.append(edges[m["edge_index"]].get("way_id"))
        row = {}
        for name, got in (("lastmile", lm), ("valhalla", vh)):
            all_ok = sum(1 for w in got if w in true_ways)
            on_ok = sum(1 for w, o in zip(got, on_route) if o and w in true_ways)
            row[name] = (all_ok, on_ok)
        n_on = sum(on_route)
        print(f"{tid} pings {len(track)} on-route {n_on} | lastmile {100*row['lastmile'][0]/len(track):.2f}% / {100*row['lastmile'][1]/max(n_on,1):.2f}% | valhalla {100*row['valhalla'][0]/len(track):.2f}% / {100*row['valhalla'][1]/max(n_on,1):.2f}%", flush=True)
        for group in ("all", "00-24" if n < 25 else "25-49"):
            t = totals.setdefault(group, [0, 0, 0, 0, 0, 0])
            t[0] += len(track); t[1] += n_on
            t[2] += row["lastmile"][0]; t[3] += row["lastmile"][1]
            t[4] += row["valhalla"][0]; t[5] += row["valhalla"][1]
    for group, t in totals.items():
        print(f"{group}: {t[0]} pings, {t[1]} on-route | lastmile {100*t[2]/t[0]:.2f}% / {100*t[3]/t[1]:.2f}% on-route | valhalla {100*t[4]/t[0]:.2f}% / {100*t[5]/t[1]:.2f}% on-route")


if __name__ == "__main__":
    main()
