//! A fleet's zones over HTTP, the same as `lastmile zones` and the QUIC
//! side's zone frames (`lastmile_node::zone_admin`): `GET /api/v1/zones`
//! gives the caller's fleet's zones as a GeoJSON `FeatureCollection`,
//! `PUT /api/v1/zones` adds (or replaces, by id) the zones of one, and
//! `DELETE /api/v1/zones/{zone}` removes one. `?time=` (seconds since the
//! epoch) dates a change; the server's clock otherwise.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::{ApiError, Web};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/zones", get(list).put(put_zones))
        .route("/api/v1/zones/{zone}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    #[serde(default)]
    time: Option<f64>,
}

async fn list(State(web): State<Arc<Web>>, c: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(web.node.zones_geojson(&c.who)?))
}

/// The body is the GeoJSON text itself (any content type: GIS tools send
/// `application/geo+json`); the node reads and checks it.
async fn put_zones(
    State(web): State<Arc<Web>>,
    c: Caller,
    Query(w): Query<When>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let time = web.node.command_time(w.time)?;
    let node = web.node.clone();
    let put = tokio::task::spawn_blocking(move || node.put_zones(&c.who, &body, time))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(json!({"zones": put})))
}

async fn remove(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(zone): Path<String>,
    Query(w): Query<When>,
) -> Result<StatusCode, ApiError> {
    let time = web.node.command_time(w.time)?;
    let node = web.node.clone();
    tokio::task::spawn_blocking(move || node.remove_zones(&c.who, &[zone], time))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}
