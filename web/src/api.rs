//! The JSON API (`/api/v1/…`): a vehicle, a stop and its ETA, vehicles
//! near a point or in a box. Names in paths are percent-encoded. Each
//! answer is what the QUIC protocol's request answers, under the same role
//! and fleet rules: readers, dispatchers and admins see their fleet's
//! vehicles and stops; a tracking token sees its own stop only, and the
//! vehicle's position only while that stop is next.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use lastmile_roadgraph::LatLon;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::{ApiError, Web, json as j};

/// The API's OpenAPI description (`web/openapi.json`), served as is.
const OPENAPI: &str = include_str!("../openapi.json");

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .route("/api/v1/vehicles", get(vehicles))
        .route("/api/v1/vehicles/{vehicle}", get(vehicle))
        .route("/api/v1/vehicles/{vehicle}/history", get(history))
        .route("/api/v1/stops/{stop}", get(stop))
        .route("/api/v1/tracking", get(tracking))
        .route("/api/v1/webhooks", get(webhooks))
}

/// The webhook endpoints of the caller's fleet (an admin's: all) and how
/// their delivery goes: what `lastmile webhooks` lists.
async fn webhooks(State(web): State<Arc<Web>>, c: Caller) -> Result<Json<Value>, ApiError> {
    c.require(c.who.role.may_read(), "read webhook endpoints")?;
    let fleet = web.node.auth.fleet_name(c.who.fleet).to_string();
    let all = c.who.role == lastmile_node::Role::Admin;
    let endpoints: Vec<Value> = web
        .node
        .webhooks
        .all()
        .iter()
        .filter(|e| all || e.fleet == fleet)
        .map(|e| j::endpoint(e))
        .collect();
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn vehicle(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    c.require(c.who.role.may_read(), "query vehicles")?;
    let id = c.vehicle_of(&name)?;
    let e = web.engine()?;
    let v = e.vehicle(id).ok_or_else(|| ApiError::no_vehicle(&name))?;
    let g = e.graph();
    let way = ((v.edge as usize) < g.num_edges()).then(|| g.way_id(v.edge));
    let briefs = e.stop_briefs(v.stops.iter().map(|s| s.stop));
    Ok(Json(j::vehicle(&c, &v, way, &briefs)))
}

/// Most points in one history answer (then `truncated`: ask again from
/// the last point's time).
const MAX_HISTORY_POINTS: usize = 20_000;

#[derive(serde::Deserialize)]
struct Window {
    /// Seconds since the epoch (event time); open when absent.
    from: Option<f64>,
    to: Option<f64>,
}

/// The vehicle's matched path between two times, clipped exactly (as
/// GET_HISTORY on the QUIC side: PROTOCOL.md).
async fn history(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(name): Path<String>,
    Query(w): Query<Window>,
) -> Result<Json<Value>, ApiError> {
    c.require(c.who.role.may_read(), "read history")?;
    let vehicle = c.vehicle_of(&name)?;
    web.engine()?;
    let window = (
        w.from.unwrap_or(f64::NEG_INFINITY),
        w.to.unwrap_or(f64::INFINITY),
    );
    if window.0.is_nan() || window.1.is_nan() || window.0 > window.1 {
        return Err(ApiError::bad_value("from must not be after to"));
    }
    let node = web.node.clone();
    let answer =
        tokio::task::spawn_blocking(move || node.history(vehicle, window, MAX_HISTORY_POINTS))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not_found",
                    "this server keeps no history (its store is disabled)",
                )
            })?;
    let (points, truncated) =
        answer.map_err(|e| ApiError::internal(format!("reading history: {e}")))?;
    Ok(Json(json!({
        "vehicle": name,
        "truncated": truncated,
        "points": points.iter().map(j::path_point).collect::<Vec<_>>(),
    })))
}

async fn stop(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (node, who) = (web.node.clone(), c.who.clone());
    let (id, view, reveal) = tokio::task::spawn_blocking(move || node.stop_for(&who, &name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(j::stop(&c, id, &view, reveal)))
}

/// The stop a tracking token covers (what the tracking page shows): as
/// `GET /api/v1/stops/{stop}`, without knowing the stop's name.
async fn tracking(State(web): State<Arc<Web>>, c: Caller) -> Result<Json<Value>, ApiError> {
    let name = c.tracked_stop("this is not a tracking token")?;
    stop(State(web), c, Path(name)).await
}

#[derive(serde::Deserialize)]
struct Where {
    /// `lat,lon`: the nearest vehicles to it.
    near: Option<String>,
    /// How many (NEAREST; at most 1000).
    k: Option<usize>,
    /// `min_lat,min_lon,max_lat,max_lon`: the vehicles inside (a box
    /// across the antimeridian has min_lon > max_lon).
    bbox: Option<String>,
}

pub(crate) fn numbers<const N: usize>(s: &str, what: &str) -> Result<[f64; N], ApiError> {
    let bad = || ApiError::bad_value(format!("{what}: expected {N} comma-separated numbers"));
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let a: [f64; N] = v.try_into().map_err(|_| bad())?;
    let in_range =
        |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    if a.chunks(2).all(|p| in_range(p[0], p[1])) {
        Ok(a)
    } else {
        Err(ApiError::bad_value(format!(
            "{what}: position out of range"
        )))
    }
}

async fn vehicles(
    State(web): State<Arc<Web>>,
    c: Caller,
    Query(q): Query<Where>,
) -> Result<Json<Value>, ApiError> {
    c.require(c.who.role.may_read(), "query positions")?;
    let (found, truncated) = match (&q.near, &q.bbox) {
        (Some(p), None) => {
            let [lat, lon] = numbers::<2>(p, "near")?;
            web.node
                .nearest_for(&c.who, LatLon::new(lat, lon), q.k.unwrap_or(10))?
        }
        (None, Some(b)) => {
            let [min_lat, min_lon, max_lat, max_lon] = numbers::<4>(b, "bbox")?;
            web.node
                .in_box_for(&c.who, [min_lon, min_lat, max_lon, max_lat])?
        }
        _ => {
            return Err(ApiError::bad_value(
                "give near=lat,lon (and k) or bbox=min_lat,min_lon,max_lat,max_lon",
            ));
        }
    };
    Ok(Json(json!({
        "truncated": truncated,
        "vehicles": found.iter().map(|f| j::found(&c, f)).collect::<Vec<_>>(),
    })))
}
