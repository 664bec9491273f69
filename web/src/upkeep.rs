//! A vehicle's upkeep record over HTTP (dispatchers), the same as the
//! QUIC side's UPKEEP frame: `POST /api/v1/vehicles/{vehicle}/upkeep`
//! with `{"serviced": true}` when it was serviced (its service counts
//! start again) and/or `{"odometer_m": …}` to set its lifetime odometer to
//! the reading on its dashboard. A vehicle not seen yet is named in the
//! caller's fleet, so a van can be recorded before its first drive.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use lastmile_engine::fleet::Command;
use lastmile_node::dispatch::Save;
use lastmile_node::ids::Kind;
use serde::Deserialize;

use crate::caller::Caller;
use crate::commands::{Body, require_dispatcher, run};
use crate::{ApiError, Web};

pub fn routes() -> Router<Arc<Web>> {
    Router::new().route("/api/v1/vehicles/{vehicle}/upkeep", post(upkeep))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpkeepJson {
    #[serde(default)]
    time: Option<f64>,
    #[serde(default)]
    serviced: bool,
    #[serde(default)]
    odometer_m: Option<f64>,
}

async fn upkeep(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(vehicle): Path<String>,
    Body(u): Body<UpkeepJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(u.time)?;
    if !u.serviced && u.odometer_m.is_none() {
        return Err(ApiError::bad_value(
            "an upkeep record says the vehicle was serviced or gives its odometer_m",
        ));
    }
    let vehicle = web.node.create_names(
        &c.who,
        [(Kind::Vehicle, vehicle.as_str())],
        Save::WithCommand,
    )?[0];
    let command = Command::Upkeep {
        vehicle,
        serviced: u.serviced,
        odometer_m: u.odometer_m,
    };
    run(&web, &c, command, time).await
}
