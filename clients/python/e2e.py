"""End-to-end check of the Python client against a running `lastmile serve`
(run by tests/python_client.rs): draw a zone where the vehicle will drive,
assign a route, send one vehicle's pings on a stream and a few as
datagrams, read its ETAs and the stop, and receive its events (the zone's
entry among them). Prints one JSON line; exits non-zero on any failure."""

import argparse
import asyncio
import csv
import json
import sys

from lastmile_client import Client, Ping, Stop, ServerError


def parse_time_ms(s: str) -> int:
    return int(round(float(s) * 1000))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--cafile")
    ap.add_argument("--fingerprint")
    ap.add_argument("--trace", required=True)
    ap.add_argument("--stops", required=True)
    ap.add_argument("--vehicle", default="veh-00001", help="a vehicle_id of the trace and stops CSVs")
    a = ap.parse_args()
    host, port = a.server.rsplit(":", 1)

    with open(a.trace) as f:
        pings = [r for r in csv.DictReader(f) if r["vehicle_id"] == a.vehicle]
    pings.sort(key=lambda r: float(r["timestamp"]))
    with open(a.stops) as f:
        stops = [r for r in csv.DictReader(f) if r["vehicle_id"] == a.vehicle]
    stops.sort(key=lambda r: int(r["seq"]))
    assert pings and stops, "vehicle has no pings or stops"

    # A wrong token is refused with code 3.
    try:
        await Client.connect(host, int(port), "not-a-token", cafile=a.cafile, fingerprint=a.fingerprint)
        raise AssertionError("wrong token accepted")
    except ServerError as e:
        assert e.code == 3, e

    c = await Client.connect(host, int(port), a.token, cafile=a.cafile, fingerprint=a.fingerprint)
    t0 = parse_time_ms(pings[0]["timestamp"])
    route = [Stop(s["stop_id"], float(s["lat"]), float(s["lon"]),
                  parse_time_ms(s["window_start"]), parse_time_ms(s["window_end"]), float(s["service_s"] or 0),
                  f"py-{s['seq']}") for s in stops]
    sub = await c.subscribe(vehicles=[a.vehicle])
    await c.assign_route(a.vehicle, route, time_ms=t0)

    # A yard of 150 m around where the vehicle truly is halfway.
    mid = pings[len(pings) // 2]
    yard = f"yard-{a.vehicle}"
    await c.put_zones({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"id": yard, "radius_m": 150},
        "geometry": {"type": "Point", "coordinates": [float(mid["true_lon"]), float(mid["true_lat"])]}}]})
    listed = await c.zones()
    assert yard in [f["properties"]["id"] for f in listed["features"]], listed
    try:
        await c.put_zones({"type": "FeatureCollection", "features": [{"type": "Feature",
                           "properties": {"id": "bad"}, "geometry": {"type": "Point", "coordinates": [0, 0]}}]})
        raise AssertionError("a Point without radius_m accepted")
    except ServerError as e:
        assert "radius_m" in str(e), e

    # Pings carry alias 0, bound to the vehicle's name on this connection.
    await c.bind({0: a.vehicle})
    records = [Ping(0, parse_time_ms(r["timestamp"]), float(r["lat"]), float(r["lon"]),
                    float(r["speed"]) if r.get("speed") else None,
                    float(r["heading"]) if r.get("heading") else None) for r in pings]
    stream = c.open_ping_stream()
    head, tail = records[:-5], records[-5:]
    accepted = 0
    for i in range(0, len(head), 100):
        c.send_pings(stream, i // 100, head[i:i + 100])
    for _ in range(0, len(head), 100):
        kind, batch, acc, rej = await c.next_control()
        assert kind == "ack", kind
        accepted += acc
    assert accepted == len(head), (accepted, len(head))
    c.send_datagram(tail)

    events = []
    try:
        while len(events) < 500:
            events.append(await sub.next(timeout=3.0))
    except asyncio.TimeoutError:
        pass
    assert events, "no events"
    assert all(e.vehicle == a.vehicle for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids), "events out of order"
    entered = [e for e in events if e.kind == "zone_entered"]
    assert [e.zone for e in entered] == [yard], [(e.kind, e.zone) for e in events if e.zone]

    v = await c.get_vehicle(a.vehicle)
    assert v["position"] is not None
    assert v["lifetime_odometer_m"] > 0 and v["moving_s"] > 0, v
    # The van was serviced and its dashboard read: the counts start again.
    await c.upkeep(a.vehicle, serviced=True, odometer_m=80_000_000.0, time_ms=head[-1].time_ms)
    for _ in range(50):
        after = await c.get_vehicle(a.vehicle)
        if after["service"]["since_ms"] == head[-1].time_ms:
            break
        await asyncio.sleep(0.1)
    assert after["service"] == {"since_ms": head[-1].time_ms, "driven_m": 0.0, "moving_s": 0.0, "due": []}, after
    assert after["lifetime_odometer_m"] == 80_000_000.0, after
    try:
        await c.upkeep(a.vehicle)
        raise AssertionError("an empty upkeep record was taken")
    except ServerError as e:
        assert "serviced" in str(e), e
    assert v["time_ms"] >= head[-1].time_ms
    assert len(v["stops"]) == len(route), v["stops"]
    first = await c.get_stop(route[0].stop_id)
    assert first["vehicle"] == a.vehicle and first["customer_ref"] == "py-" + stops[0]["seq"]
    stats = await c.stats()
    await c.close()
    print(json.dumps({
        "pings_sent": len(records), "acked": accepted, "events": len(events),
        "kinds": sorted({e.kind for e in events}),
        "zones_entered": [e.zone for e in entered],
        "stops": [(s["stop"], s["status"], s["eta_ms"]) for s in v["stops"]],
        "server_pings_accepted": stats["pings_accepted"],
    }))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"assertion failed: {e}", file=sys.stderr)
        sys.exit(1)
