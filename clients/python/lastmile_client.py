"""A Python client for lastmile, written from PROTOCOL.md alone.

Speaks version 4 of the lastmile protocol over QUIC with aioquic: HELLO on
the control stream, pings on unidirectional streams (acknowledged) or as
datagrams, requests on bidirectional streams, event subscriptions.
Vehicles and stops are named by the fleet's own strings; a ping carries a
per-connection alias bound to its vehicle's name with BIND.

    client = await Client.connect("127.0.0.1", 4433, token, cafile="dev-cert.pem")
    await client.bind({0: "van-42"})
    client.send_pings(client.open_ping_stream(), 1, [Ping(0, 1767225600000, 43.73, 7.42)])
    ack = await client.next_control()
    vehicle = await client.get_vehicle("van-42")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import struct
from dataclasses import dataclass, field
from typing import Optional

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived

ALPN = "lastmile/1"
VERSION = 4
ABSENT = 0xFFFF
FROM_NOW = 0xFFFFFFFFFFFFFFFF
AT_END = 0xFFFFFFFF

# Frame types (PROTOCOL.md section 4).
HELLO, WELCOME = 0x0001, 0x0002
PINGS, ACK, BIND = 0x0010, 0x0011, 0x0012
GET_VEHICLE, VEHICLE, GET_STOP, STOP = 0x0020, 0x0021, 0x0022, 0x0023
NEAREST, IN_BOX, VEHICLES = 0x0024, 0x0025, 0x0026
ASSIGN_ROUTE, ADD_STOP, REMOVE_STOP, REORDER = 0x0030, 0x0031, 0x0032, 0x0033
COMPLETE, FAIL, REASSIGN = 0x0034, 0x0035, 0x0036
CREATE_TRACKING_TOKEN, TRACKING_TOKEN, UPKEEP, OK = 0x0037, 0x0038, 0x0039, 0x003F
SUBSCRIBE, SUBSCRIBED, EVENTS, LOST = 0x0040, 0x0041, 0x0042, 0x0043
GET_STATS, STATS, ERROR = 0x0050, 0x0051, 0x007F
PUT_ZONES, REMOVE_ZONES, GET_ZONES, ZONES = 0x0060, 0x0061, 0x0062, 0x0063

EVENT_KINDS = {
    1: "eta_changed", 2: "late", 3: "back_on_time", 4: "off_route", 5: "back_on_route",
    6: "arrived", 7: "departed", 8: "completed", 9: "failed", 10: "stalled",
    11: "speeding", 12: "harsh_braking", 13: "offline", 14: "online", 15: "gps_outlier",
    16: "stop_unreachable", 17: "rated", 18: "out_for_delivery", 19: "next_stop", 20: "arriving",
    21: "delivered", 22: "failed_attempt", 23: "rescheduled", 24: "at_risk", 25: "risk_cleared",
    26: "zone_entered", 27: "zone_left", 28: "zone_dwell", 29: "forbidden_zone", 30: "outside_area",
    31: "zone_speeding", 32: "off_hours_movement", 33: "service_due",
}
STOP_STATUS = ["pending", "next", "arrived", "completed", "failed"]
ETA_STATE = ["unknown", "known", "unreachable"]
MATCH_STATUS = ["none", "matched", "reset", "unmatched", "outlier", "out_of_order", "duplicate",
                "invalid", "break"]


class ServerError(Exception):
    """An ERROR frame: `code` as in PROTOCOL.md section 6."""

    def __init__(self, code: int, message: str):
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message


def frame(ftype: int, payload: bytes) -> bytes:
    return struct.pack("<IHH", len(payload), ftype, 0) + payload


def pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("payload too short")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def str(self) -> str:
        (n,) = self.take("<H")
        if self.pos + n > len(self.data):
            raise ValueError("string past the end")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s


def e7(deg: float) -> int:
    return int(round(deg * 1e7))


@dataclass
class Ping:
    vehicle: int  # the alias BIND gave the vehicle's name on this connection
    time_ms: int
    lat: float
    lon: float
    speed_mps: Optional[float] = None
    heading_deg: Optional[float] = None
    accuracy_m: Optional[float] = None

    def encode(self) -> bytes:
        def opt(v, scale):
            if v is None:
                return ABSENT
            x = int(round(v * scale))
            return x if 0 <= x < ABSENT else ABSENT

        heading = opt(None if self.heading_deg is None else self.heading_deg % 360.0, 100)
        return struct.pack("<QqiiHHHH", self.vehicle, self.time_ms, e7(self.lat), e7(self.lon),
                           opt(self.speed_mps, 100), heading if heading == ABSENT else heading % 36000,
                           opt(self.accuracy_m, 10), 0)


@dataclass
class Stop:
    stop_id: str
    lat: float
    lon: float
    window_start_ms: int = 0
    window_end_ms: int = 0
    service_s: float = 0.0
    customer_ref: str = ""

    def encode(self) -> bytes:
        return pack_str(self.stop_id) + struct.pack("<iiqqfi", e7(self.lat), e7(self.lon), self.window_start_ms,
                                                    self.window_end_ms, self.service_s, 0) + pack_str(self.customer_ref)


@dataclass
class Event:
    id: int
    vehicle: str
    seq: int
    stop: Optional[str]
    zone: Optional[str]
    time_ms: int
    kind: str
    lat: float
    lon: float
    value: float
    reference: float
    # When value is a stop's ETA: its P10 and P90 (ms since the epoch), else None.
    eta_window_ms: Optional[tuple[int, int]] = None


def decode_events(payload: bytes) -> list[Event]:
    r = Reader(payload)
    (n,) = r.take("<I")
    out = []
    for _ in range(n):
        (eid,) = r.take("<Q")
        vehicle = r.str()
        (seq,) = r.take("<Q")
        stop, zone = r.str(), r.str()
        t, kind, _r, _r2, lat, lon, value, ref, p10, p90 = r.take("<qBBHiiddqq")
        window = (p10, p90) if p10 and p90 else None
        out.append(Event(eid, vehicle, seq, stop or None, zone or None, t, EVENT_KINDS.get(kind, str(kind)),
                         lat * 1e-7, lon * 1e-7, value, ref, window))
    return out


def decode_vehicle(payload: bytes) -> dict:
    r = Reader(payload)
    vehicle = r.str()
    t, mt, lat, lon, edge, way, off, speed, heading, odo, status, flags, _r = r.take("<qqiiIqfffdBBH")
    nxt = r.str()
    (n,) = r.take("<I")
    stops = []
    for _ in range(n):
        sid = r.str()
        eta, p10, p90, wend, rem, before, st, late, state, at_risk = r.take("<qqqqfIBBBB")
        stops.append({"stop": sid, "eta_ms": eta, "eta_state": ETA_STATE[state], "eta_window_ms": (p10, p90),
                      "window_end_ms": wend, "remaining_m": rem,
                      "stops_before": before, "status": STOP_STATUS[st], "late": bool(late),
                      "at_risk": bool(at_risk)})
    lifetime_m, moving_s, since, driven_m, since_moving_s, due = r.take("<ddqddB")
    service = {"since_ms": since, "driven_m": driven_m, "moving_s": since_moving_s,
               "due": [name for bit, name in ((1, "distance"), (2, "moving_time"), (4, "calendar")) if due & bit]}
    return {"vehicle": vehicle, "time_ms": t, "matched_time_ms": mt,
            "position": (lat * 1e-7, lon * 1e-7) if flags & 1 else None, "edge": edge, "way_id": way,
            "speed_mps": speed, "moving": bool(flags & 2), "online": bool(flags & 4),
            "off_route": bool(flags & 8), "next_stop": nxt if flags & 16 else None,
            "match_status": MATCH_STATUS[status] if status < len(MATCH_STATUS) else str(status),
            "odometer_m": odo, "lifetime_odometer_m": lifetime_m, "moving_s": moving_s,
            "service": service, "stops": stops}


def decode_stop(payload: bytes) -> dict:
    r = Reader(payload)
    sid, vehicle = r.str(), r.str()
    status, flags, state, _r, before, eta, p10, p90, rem, lat, lon, ws, we, service, snap_m, snap_c, \
        vlat, vlon, vt, closed = r.take("<BBBBIqqqfiiqqffIiiqq")
    ref, outcome = r.str(), r.str()
    return {"stop": sid, "vehicle": vehicle, "status": STOP_STATUS[status], "late": bool(flags & 1),
            "at_risk": bool(flags & 4),
            "stops_before": before, "eta_ms": eta, "eta_state": ETA_STATE[state], "eta_window_ms": (p10, p90),
            "remaining_m": rem, "position": (lat * 1e-7, lon * 1e-7),
            "window_ms": (ws, we), "service_s": service, "snap_m": snap_m, "snap_component": snap_c,
            "vehicle_position": (vlat * 1e-7, vlon * 1e-7, vt) if flags & 2 else None,
            "closed_ms": closed, "customer_ref": ref, "outcome": outcome}


class _Stream:
    """Bytes received on one stream, split into frames."""

    def __init__(self):
        self.buf = bytearray()
        self.frames: asyncio.Queue = asyncio.Queue()
        self.ended = False

    def feed(self, data: bytes, end: bool):
        self.buf += data
        while len(self.buf) >= 8:
            length, ftype, _flags = struct.unpack_from("<IHH", self.buf, 0)
            if len(self.buf) < 8 + length:
                break
            payload = bytes(self.buf[8:8 + length])
            del self.buf[:8 + length]
            self.frames.put_nowait((ftype, payload))
        if end:
            self.ended = True
            self.frames.put_nowait(None)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams: dict[int, _Stream] = {}
        self.closed = asyncio.get_event_loop().create_future()

    def stream(self, sid: int) -> _Stream:
        if sid not in self.streams:
            self.streams[sid] = _Stream()
        return self.streams[sid]

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.stream(event.stream_id).feed(event.data, event.end_stream)
        elif isinstance(event, ConnectionTerminated):
            for s in self.streams.values():
                s.frames.put_nowait(None)
            if not self.closed.done():
                self.closed.set_result((event.error_code, event.reason_phrase))
        elif isinstance(event, HandshakeCompleted):
            pass


class Client:
    """One authenticated connection."""

    def __init__(self, ctx, proto: _Protocol, control: int):
        self._ctx, self._proto, self._control = ctx, proto, control
        self.role = self.fleet = None
        self.max_batch = 0

    @classmethod
    async def connect(cls, host: str, port: int, token: str, cafile: Optional[str] = None,
                      fingerprint: Optional[str] = None, server_name: str = "localhost") -> "Client":
        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], server_name=server_name,
                                   max_datagram_frame_size=65536)
        if cafile:
            config.load_verify_locations(cafile)
        elif fingerprint:
            # Pinned: verification is the fingerprint comparison below.
            config.verify_mode = ssl.CERT_NONE
        else:
            raise ValueError("give cafile= or fingerprint= to trust the server")
        ctx = connect(host, port, configuration=config, create_protocol=_Protocol)
        proto = await ctx.__aenter__()
        if fingerprint:
            from cryptography.hazmat.primitives.serialization import Encoding
            der = proto._quic.tls._peer_certificate.public_bytes(Encoding.DER)
            if hashlib.sha256(der).hexdigest() != fingerprint.replace(":", "").lower():
                await ctx.__aexit__(None, None, None)
                raise ssl.SSLError("server certificate does not match the pinned fingerprint")
        control = proto._quic.get_next_available_stream_id(is_unidirectional=False)
        client = cls(ctx, proto, control)
        client._send(control, frame(HELLO, struct.pack("<HH", VERSION, 0) + pack_str(token)))
        ftype, payload = await client._next(control)
        if ftype == ERROR:
            r = Reader(payload)
            (code,) = r.take("<H")
            raise ServerError(code, r.str())
        if ftype != WELCOME:
            raise ValueError(f"expected WELCOME, got frame type {ftype:#x}")
        r = Reader(payload)
        version, role, _r, client.max_frame, client.max_batch, client.datagram_batch, client.clock_ms = \
            r.take("<HBBIIIq")
        if version != VERSION:
            raise ValueError(f"the server speaks protocol version {version}, this client {VERSION}")
        client.role, client.fleet = role, r.str()
        return client

    def _send(self, sid: int, data: bytes, end: bool = False):
        self._proto._quic.send_stream_data(sid, data, end_stream=end)
        self._proto.transmit()

    async def _next(self, sid: int, timeout: float = 10.0):
        item = await asyncio.wait_for(self._proto.stream(sid).frames.get(), timeout)
        if item is None:
            raise ConnectionError("stream ended")
        return item

    async def close(self):
        self._proto.close()
        await self._ctx.__aexit__(None, None, None)

    # ---------------------------------------------------------------- pings

    def open_ping_stream(self) -> int:
        return self._proto._quic.get_next_available_stream_id(is_unidirectional=True)

    def send_pings(self, stream: int, batch_id: int, pings: list[Ping]):
        """One PINGS frame on a unidirectional stream; the ACK comes on the control stream."""
        body = struct.pack("<QII", batch_id, len(pings), 0) + b"".join(p.encode() for p in pings)
        self._send(stream, frame(PINGS, body))

    def send_datagram(self, pings: list[Ping]):
        body = struct.pack("<QII", 0, len(pings), 0) + b"".join(p.encode() for p in pings)
        self._proto._quic.send_datagram_frame(frame(PINGS, body))
        self._proto.transmit()

    async def next_control(self, timeout: float = 10.0):
        """('ack', batch_id, accepted, rejected) or ('error', code, message)."""
        ftype, payload = await self._next(self._control, timeout)
        if ftype == ACK:
            return ("ack",) + struct.unpack("<QII", payload)
        r = Reader(payload)
        (code,) = r.take("<H")
        return ("error", code, r.str())

    # ------------------------------------------------------------- requests

    async def request(self, ftype: int, payload: bytes):
        sid = self._proto._quic.get_next_available_stream_id(is_unidirectional=False)
        self._send(sid, frame(ftype, payload), end=True)
        rtype, rpayload = await self._next(sid)
        if rtype == ERROR:
            r = Reader(rpayload)
            (code,) = r.take("<H")
            raise ServerError(code, r.str())
        return rtype, rpayload

    async def bind(self, aliases: dict[int, str]):
        """Binds ping aliases on this connection to vehicles' names."""
        body = struct.pack("<I", len(aliases)) + b"".join(
            struct.pack("<Q", a) + pack_str(name) for a, name in aliases.items())
        await self.request(BIND, body)

    async def get_vehicle(self, vehicle: str) -> dict:
        _, p = await self.request(GET_VEHICLE, pack_str(vehicle))
        return decode_vehicle(p)

    async def get_stop(self, stop: str) -> dict:
        _, p = await self.request(GET_STOP, pack_str(stop))
        return decode_stop(p)

    async def assign_route(self, vehicle: str, stops: list[Stop], time_ms: int = 0):
        body = pack_str(vehicle) + struct.pack("<qI", time_ms, len(stops)) + b"".join(s.encode() for s in stops)
        await self.request(ASSIGN_ROUTE, body)

    async def complete(self, vehicle: str, stop: str, note: str = "", photos: list[str] = (), time_ms: int = 0):
        proof = struct.pack("<BBHii", 0, 0, 0, 0, 0) + pack_str("") + pack_str(note) + \
            struct.pack("<H", len(photos)) + b"".join(pack_str(p) for p in photos)
        await self.request(COMPLETE, pack_str(vehicle) + struct.pack("<q", time_ms) + pack_str(stop) + proof)

    async def upkeep(self, vehicle: str, serviced: bool = False, odometer_m: Optional[float] = None,
                     time_ms: int = 0):
        """Records that the vehicle was serviced and/or what its odometer reads (metres)."""
        odo = float("nan") if odometer_m is None else odometer_m
        await self.request(UPKEEP, pack_str(vehicle) + struct.pack("<qBd", time_ms, serviced, odo))

    async def put_zones(self, collection: dict, time_ms: int = 0):
        """Adds a GeoJSON FeatureCollection's zones to the caller's fleet."""
        text = json.dumps(collection).encode()
        await self.request(PUT_ZONES, struct.pack("<qI", time_ms, len(text)) + text)

    async def remove_zones(self, ids: list[str], time_ms: int = 0):
        body = struct.pack("<qI", time_ms, len(ids)) + b"".join(pack_str(z) for z in ids)
        await self.request(REMOVE_ZONES, body)

    async def zones(self) -> dict:
        """The caller's fleet's zones, a GeoJSON FeatureCollection."""
        _, p = await self.request(GET_ZONES, b"")
        (n,) = struct.unpack_from("<I", p)
        return json.loads(p[4:4 + n].decode())

    async def stats(self) -> dict:
        _, p = await self.request(GET_STATS, b"")
        r = Reader(p)
        (n,) = r.take("<I")
        out = {}
        for _ in range(n):
            name = r.str()
            (out[name],) = r.take("<Q")
        return out

    async def subscribe(self, vehicles=(), stops=(), kinds: int = 0, start: int = FROM_NOW) -> "Subscription":
        sid = self._proto._quic.get_next_available_stream_id(is_unidirectional=False)
        body = struct.pack("<QQI", start, kinds, len(vehicles)) + b"".join(pack_str(v) for v in vehicles)
        body += struct.pack("<I", len(stops)) + b"".join(pack_str(s) for s in stops)
        self._send(sid, frame(SUBSCRIBE, body))
        ftype, p = await self._next(sid)
        if ftype == ERROR:
            r = Reader(p)
            (code,) = r.take("<H")
            raise ServerError(code, r.str())
        return Subscription(self, sid, struct.unpack("<Q", p)[0])


@dataclass
class Subscription:
    client: Client
    stream: int
    next_id: int
    lost: int = 0
    pending: list = field(default_factory=list)

    async def next(self, timeout: float = 10.0) -> Event:
        while not self.pending:
            ftype, p = await self.client._next(self.stream, timeout)
            if ftype == EVENTS:
                self.pending.extend(decode_events(p))
            elif ftype == LOST:
                self.lost += struct.unpack("<Q", p)[0]
        return self.pending.pop(0)
