//! Every message through the codec, in both versions: what version 2
//! carries comes back equal; version 1 comes back the same on a second
//! trip (it drops what it cannot carry); every truncation, extension and
//! random damage of a payload is an error, never a panic.

use super::*;

fn stop(id: &str) -> WireStop {
    WireStop {
        id: id.into(),
        lat_e7: 437_000_000,
        lon_e7: 74_000_000,
        window_start_ms: 1_000,
        window_end_ms: 2_000,
        service_s: 120.0,
        customer_ref: format!("order-{id}"),
    }
}

pub(crate) fn all_requests() -> Vec<Request> {
    vec![
        Request::GetVehicle {
            vehicle: "7".into(),
        },
        Request::GetStop { stop: "8".into() },
        Request::Nearest {
            lat_e7: 1,
            lon_e7: -2,
            k: 10,
        },
        Request::InBox {
            min_lat_e7: -1,
            min_lon_e7: -2,
            max_lat_e7: 3,
            max_lon_e7: 4,
        },
        Request::AssignRoute {
            vehicle: "1".into(),
            time_ms: 5,
            stops: vec![stop("1"), stop("2")],
        },
        Request::AddStop {
            vehicle: "1".into(),
            time_ms: 0,
            index: AT_END,
            stop: stop("3"),
        },
        Request::RemoveStop {
            vehicle: "1".into(),
            time_ms: 0,
            stop: "3".into(),
        },
        Request::Reorder {
            vehicle: "1".into(),
            time_ms: 9,
            order: vec!["2".into(), "1".into()],
        },
        Request::Complete {
            vehicle: "1".into(),
            time_ms: 9,
            stop: "2".into(),
            proof: WireProof {
                pos_e7: Some((5, 6)),
                signature_ref: "sig/1".into(),
                note: "left with neighbour".into(),
                photo_refs: vec!["p/1.jpg".into(), "p/2.jpg".into()],
            },
        },
        Request::Fail {
            vehicle: "1".into(),
            time_ms: 9,
            stop: "1".into(),
            reason: "nobody home".into(),
        },
        Request::Reassign {
            stop: "4".into(),
            to_vehicle: "#4611686018427387905".into(),
            time_ms: 0,
            index: 0,
        },
        Request::CreateTrackingToken {
            stop: "4".into(),
            ttl_s: 3600,
        },
        Request::Subscribe {
            from: FROM_NOW,
            kinds: 0b110,
            vehicles: vec!["1".into(), "2".into()],
            stops: vec![],
        },
        Request::GetStats,
        Request::GetHistory {
            vehicle: "4".into(),
            from_ms: NO_TIME,
            to_ms: 1_767_225_600_000,
        },
    ]
}

/// Requests only version 2 has, or names only it can carry.
fn v2_requests() -> Vec<Request> {
    vec![
        Request::Bind {
            vehicles: vec![(0, "van-42".into()), (1, "imei:356938035643809".into())],
        },
        Request::AssignRoute {
            vehicle: "van-42".into(),
            time_ms: 0,
            stops: vec![stop("order-ü-17"), stop("17")],
        },
        Request::PutZones {
            time_ms: 1_767_225_600_000,
            geojson: r#"{"type": "FeatureCollection", "features": []}"#.into(),
        },
        Request::RemoveZones {
            time_ms: 0,
            zones: vec!["depot".into(), "yard ü".into()],
        },
        Request::GetZones,
    ]
}

/// Responses only version 2 and later have.
fn v2_responses() -> Vec<Response> {
    vec![Response::Zones {
        geojson: r#"{"type": "FeatureCollection", "features": []}"#.into(),
    }]
}

pub(crate) fn all_responses() -> Vec<Response> {
    let eta = WireStopEta {
        stop: "3".into(),
        eta: WireEta {
            state: EtaStateCode::Known,
            eta_ms: 99,
            p10_ms: 90,
            p90_ms: 120,
        },
        window_end_ms: 100,
        remaining_m: 1234.5,
        stops_before: 1,
        status: StopStatusCode::Pending,
        late: true,
        at_risk: true,
    };
    vec![
        Response::Vehicle(WireVehicle {
            vehicle: "1".into(),
            time_ms: 2,
            matched_time_ms: 3,
            lat_e7: 4,
            lon_e7: 5,
            has_position: true,
            edge: 6,
            way_id: 7,
            offset_m: 8.5,
            speed_mps: 9.5,
            heading_deg: 10.5,
            odometer_m: 11.5,
            lifetime_odometer_m: 12.5,
            moving_s: 13.5,
            service_since_ms: 1_767_225_600_000,
            service_driven_m: 14.5,
            service_moving_s: 15.5,
            service_due: 5,
            match_status: MATCH_BREAK,
            moving: true,
            online: false,
            off_route: true,
            next_stop: Some("3".into()),
            stops: vec![eta.clone(), eta],
        }),
        Response::Stop(WireStopView {
            stop: "3".into(),
            vehicle: "1".into(),
            status: StopStatusCode::Failed,
            late: false,
            at_risk: true,
            stops_before: 0,
            eta: WireEta {
                state: EtaStateCode::Unreachable,
                eta_ms: NO_TIME,
                p10_ms: NO_TIME,
                p90_ms: NO_TIME,
            },
            remaining_m: 0.0,
            lat_e7: 6,
            lon_e7: 7,
            window_start_ms: 8,
            window_end_ms: 9,
            service_s: 60.0,
            snap_m: 12.5,
            snap_component: 3,
            vehicle_pos: Some((1, 2, 3)),
            closed_ms: 10,
            customer_ref: "c".into(),
            outcome_text: "nobody home".into(),
        }),
        Response::Vehicles {
            truncated: true,
            found: vec![WireFound {
                vehicle: "1".into(),
                lat_e7: 2,
                lon_e7: 3,
                time_ms: 4,
                distance_m: 5.0,
                speed_mps: 6.0,
            }],
        },
        Response::Ok,
        Response::TrackingToken {
            token: "t0k".into(),
            expires_ms: 77,
        },
        Response::Subscribed { next_id: 5 },
        Response::Events(vec![
            WireEvent {
                id: 1,
                vehicle: "2".into(),
                seq: 3,
                stop: None,
                zone: None,
                time_ms: 4,
                kind: 2,
                lat_e7: 5,
                lon_e7: 6,
                value: 7.0,
                reference: 8.0,
                eta_p10_ms: NO_TIME,
                eta_p90_ms: NO_TIME,
            },
            WireEvent {
                id: 2,
                vehicle: "van-42".into(),
                seq: 4,
                stop: Some("order-17".into()),
                zone: Some("depot".into()),
                time_ms: 5,
                kind: 6,
                lat_e7: 5,
                lon_e7: 6,
                value: 7.0,
                reference: 8.0,
                eta_p10_ms: 6_000,
                eta_p90_ms: 9_500,
            },
        ]),
        Response::Lost { count: 12 },
        Response::Stats(vec![("pings_accepted".into(), 5)]),
        Response::History {
            truncated: true,
            points: vec![
                WirePathPoint {
                    time_ms: 1_767_225_600_000,
                    lat_e7: 437_000_000,
                    lon_e7: 74_000_000,
                    edge: 12,
                    flags: PATH_BREAK,
                },
                WirePathPoint {
                    time_ms: 1_767_225_601_500,
                    lat_e7: 437_000_100,
                    lon_e7: 74_000_050,
                    edge: 12,
                    flags: PATH_INTERPOLATED,
                },
            ],
        },
        Response::error(ErrorCode::Forbidden, "not your fleet"),
    ]
}

fn request_bytes(v: Version, req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    req.encode(v, &mut buf);
    buf
}

fn response_bytes(v: Version, resp: &Response) -> Vec<u8> {
    let mut buf = Vec::new();
    resp.encode(v, &mut buf);
    buf
}

#[test]
fn versions_2_to_4_carry_every_message_whole() {
    for v in [Version::V2, Version::V3, Version::V4] {
        let wide = Request::Subscribe {
            from: 0,
            kinds: 1 << 33 | 1 << 2,
            vehicles: vec![],
            stops: vec![],
        };
        // Only version 4 records upkeep.
        let upkeep = Request::Upkeep {
            vehicle: "van-42".into(),
            time_ms: 0,
            serviced: true,
            odometer_m: 8.0e7,
        };
        for mut req in all_requests()
            .into_iter()
            .chain(v2_requests())
            .chain([wide])
            .chain((v == Version::V4).then_some(upkeep))
        {
            let buf = request_bytes(v, &req);
            let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
            // Before version 4 a kind mask has 32 bits.
            if let (true, Request::Subscribe { kinds, .. }) = (v < Version::V4, &mut req) {
                *kinds &= u64::from(u32::MAX);
            }
            assert_eq!(Request::decode(v, h.kind, payload).unwrap(), req);
        }
        for mut resp in all_responses().into_iter().chain(v2_responses()) {
            let buf = response_bytes(v, &resp);
            let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
            // Before version 4 a vehicle has no lifetime counters.
            if let (true, Response::Vehicle(x)) = (v < Version::V4, &mut resp) {
                (x.lifetime_odometer_m, x.moving_s) = (0.0, 0.0);
                (x.service_since_ms, x.service_driven_m) = (NO_TIME, 0.0);
                (x.service_moving_s, x.service_due) = (0.0, 0);
            }
            // Version 2 has no room for an event's window, nor for risk.
            if v == Version::V2 {
                match &mut resp {
                    Response::Events(events) => {
                        for e in events {
                            (e.eta_p10_ms, e.eta_p90_ms) = (NO_TIME, NO_TIME);
                        }
                    }
                    Response::Vehicle(x) => x.stops.iter_mut().for_each(|s| s.at_risk = false),
                    Response::Stop(s) => s.at_risk = false,
                    _ => {}
                }
            }
            assert_eq!(Response::decode(v, h.kind, payload).unwrap(), resp);
        }
    }
}

#[test]
fn version_1_carries_numbers_and_drops_what_it_has_no_room_for() {
    let v = Version::V1;
    for req in all_requests() {
        let buf = request_bytes(v, &req);
        let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
        // Numeric names, and engine ids, survive as they are.
        assert_eq!(Request::decode(v, h.kind, payload).unwrap(), req);
    }
    for resp in all_responses() {
        let buf = response_bytes(v, &resp);
        let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
        let back = Response::decode(v, h.kind, payload).unwrap();
        assert_eq!(response_bytes(v, &back), buf, "{resp:?}");
        match back {
            // `break` is `reset` to a version-1 client.
            Response::Vehicle(x) => {
                assert_eq!(x.match_status, 2);
                assert_eq!(x.stops[0].eta.p10_ms, NO_TIME);
            }
            Response::Stop(s) => assert_eq!(s.eta.state, EtaStateCode::Unknown),
            _ => {}
        }
    }
    // BIND is a version-2 frame.
    let buf = request_bytes(Version::V2, &v2_requests()[0]);
    assert!(Request::decode(v, FrameType::Bind as u16, &buf[8..]).is_err());
    assert_eq!(
        records::v1_name(ALLOCATED_ID + 5),
        format!("#{}", ALLOCATED_ID + 5)
    );
    assert_eq!(
        records::v1_number(&format!("#{}", ALLOCATED_ID + 5)),
        ALLOCATED_ID + 5
    );
}

#[test]
fn handshake_and_ack_round_trip() {
    let hello = Hello {
        version: 2,
        token: "secret".into(),
    };
    let mut buf = Vec::new();
    hello.encode(&mut buf);
    assert_eq!(Hello::decode(&buf[8..]).unwrap(), hello);
    let welcome = Welcome {
        version: 1,
        role: Role::Dispatcher,
        max_frame: 1 << 20,
        max_batch: 32_000,
        datagram_batch: 36,
        clock_ms: 123,
        fleet: "acme".into(),
    };
    let mut buf = Vec::new();
    welcome.encode(&mut buf);
    assert_eq!(Welcome::decode(&buf[8..]).unwrap(), welcome);
    let ack = Ack {
        batch_id: 9,
        accepted: 10,
        rejected: 1,
    };
    let mut buf = Vec::new();
    ack.encode(&mut buf);
    assert_eq!(Ack::decode(&buf[8..]).unwrap(), ack);
    assert_eq!(Version::agree(1), Some(Version::V1));
    assert_eq!(Version::agree(2), Some(Version::V2));
    assert_eq!(Version::agree(3), Some(Version::V3));
    assert_eq!(Version::agree(7), Some(Version::V4));
    assert_eq!(Version::agree(0), None);
}

#[test]
fn truncated_extended_and_random_payloads_are_errors_not_panics() {
    let mut rng = lastmile_roadgraph::rng::Rng::seed(11);
    for v in [Version::V1, Version::V2, Version::V3, Version::V4] {
        let mut frames = Vec::new();
        for req in all_requests().into_iter().chain(v2_requests()) {
            frames.push((true, request_bytes(v, &req)));
        }
        for resp in all_responses() {
            frames.push((false, response_bytes(v, &resp)));
        }
        let decode = |is_req: bool, kind: u16, p: &[u8]| {
            if is_req {
                Request::decode(v, kind, p).map(|_| ())
            } else {
                Response::decode(v, kind, p).map(|_| ())
            }
        };
        for (is_req, buf) in &frames {
            let kind = u16::from_le_bytes([buf[4], buf[5]]);
            let payload = &buf[8..];
            for cut in 0..payload.len() {
                assert!(decode(*is_req, kind, &payload[..cut]).is_err());
            }
            let mut longer = payload.to_vec();
            longer.push(0);
            assert!(decode(*is_req, kind, &longer).is_err());
            for _ in 0..200 {
                let mut damaged = payload.to_vec();
                let n = damaged.len().max(1);
                for _ in 0..3 {
                    let i = rng.below(n as u64) as usize;
                    if i < damaged.len() {
                        damaged[i] = rng.below(256) as u8;
                    }
                }
                let _ = decode(*is_req, kind, &damaged);
            }
        }
        assert_eq!(
            Request::decode(v, FrameType::Ok as u16, &[]),
            Err(DecodeError::UnknownType(FrameType::Ok as u16))
        );
    }
}
