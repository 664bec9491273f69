//! Dispatchers' commands over HTTP (`/api/v1/…`, dispatcher and admin
//! tokens): a vehicle's route, its stops added, removed and reordered, a
//! stop completed with its proof of delivery, failed, moved to another
//! vehicle, and a customer's tracking link minted; and the one command a
//! customer gives, with the stop's tracking token: rating its delivery. The same checks as the
//! QUIC side (`lastmile_node::dispatch`): vehicles and stops planned under
//! new names get ids in the caller's fleet, the others must exist by the
//! names given; `time` (seconds since the epoch, optional: the server's
//! clock) must be a plausible event time. Answered `204 No Content` once
//! the command is applied and, with a store, durable.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use lastmile_engine::fleet::{
    Admission, Command, CommandError, Engine, ProofOfDelivery, Rating, StopPlan,
};
use lastmile_node::dispatch::{self, Save};
use lastmile_node::ids::Kind;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::{ApiError, Web};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/vehicles/{vehicle}/route", put(assign_route))
        .route("/api/v1/vehicles/{vehicle}/stops", post(add_stop))
        .route(
            "/api/v1/vehicles/{vehicle}/stops/{stop}",
            delete(remove_stop),
        )
        .route("/api/v1/vehicles/{vehicle}/order", put(reorder))
        .route("/api/v1/stops/{stop}/complete", post(complete))
        .route("/api/v1/stops/{stop}/fail", post(fail))
        .route("/api/v1/stops/{stop}/reassign", post(reassign))
        .route("/api/v1/stops/{stop}/tracking-token", post(tracking_token))
        .route("/api/v1/stops/{stop}/rating", post(rate))
        .route("/api/v1/tracking/rating", post(rate_mine))
}

/// A JSON body whose refusal (not JSON, wrong fields) is a `bad_value`
/// error like every other.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_value(match e {
                JsonRejection::MissingJsonContentType(_) => {
                    "the body must be JSON (Content-Type: application/json)".to_string()
                }
                other => other.body_text(),
            })),
        }
    }
}

/// A stop as a dispatcher plans it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanJson {
    stop: String,
    /// `[lat, lon]`.
    position: [f64; 2],
    /// `[start, end]`, seconds since the epoch.
    #[serde(default)]
    window: Option<[f64; 2]>,
    #[serde(default)]
    service_s: f64,
    #[serde(default)]
    customer_ref: String,
}

impl PlanJson {
    fn plan(&self, id: u64) -> Result<StopPlan, ApiError> {
        let [lat, lon] = self.position;
        Ok(dispatch::plan(
            &self.stop,
            id,
            dispatch::position(lat, lon),
            self.window.map(|[a, b]| (a, b)),
            self.service_s,
            &self.customer_ref,
        )?)
    }
}

pub(crate) fn require_dispatcher(c: &Caller) -> Result<(), ApiError> {
    c.require(c.who.role.may_dispatch(), "change routes and stops")
}

/// Runs a command off the async threads (it may wait for room in a shard
/// queue, and for the journal's sync) and answers 204.
pub(crate) async fn run(
    web: &Arc<Web>,
    c: &Caller,
    command: Command,
    time: f64,
) -> Result<StatusCode, ApiError> {
    apply(web, c, move |e| {
        e.command(command, time, Admission::Wait(Duration::from_secs(5)))
    })
    .await
}

/// Applies `f` to the engine off the async threads; its refusal as the
/// caller may see it.
async fn apply(
    web: &Arc<Web>,
    c: &Caller,
    f: impl FnOnce(&Engine) -> Result<(), CommandError> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    let engine = web.engine()?.clone();
    let done = tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match done {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(web.node.refusal_of(&c.who, &e, false).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteJson {
    #[serde(default)]
    time: Option<f64>,
    stops: Vec<PlanJson>,
}

/// Most stops in one route, as on the QUIC side.
const MAX_STOPS: usize = 10_000;

async fn assign_route(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(vehicle): Path<String>,
    Body(r): Body<RouteJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    if r.stops.len() > MAX_STOPS {
        return Err(ApiError::bad_value(format!(
            "at most {MAX_STOPS} stops per route"
        )));
    }
    let time = web.node.command_time(r.time)?;
    // Checked before any name is made: a refused plan leaves none behind.
    let mut stops: Vec<StopPlan> = r
        .stops
        .iter()
        .map(|p| p.plan(0))
        .collect::<Result<_, _>>()?;
    let names = std::iter::once((Kind::Vehicle, vehicle.as_str()))
        .chain(r.stops.iter().map(|p| (Kind::Stop, p.stop.as_str())));
    let ids = web.node.create_names(&c.who, names, Save::WithCommand)?;
    for (plan, id) in stops.iter_mut().zip(&ids[1..]) {
        plan.id = *id;
    }
    run(
        &web,
        &c,
        Command::AssignRoute {
            vehicle: ids[0],
            stops,
        },
        time,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    #[serde(default)]
    time: Option<f64>,
    /// Among the open stops (default: at the end).
    #[serde(default)]
    index: Option<usize>,
    stop: PlanJson,
}

async fn add_stop(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(vehicle): Path<String>,
    Body(a): Body<AddJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(a.time)?;
    let mut stop = a.stop.plan(0)?;
    let names = [
        (Kind::Vehicle, vehicle.as_str()),
        (Kind::Stop, a.stop.stop.as_str()),
    ];
    let ids = web.node.create_names(&c.who, names, Save::WithCommand)?;
    stop.id = ids[1];
    let command = Command::AddStop {
        vehicle: ids[0],
        stop,
        index: a.index,
    };
    run(&web, &c, command, time).await
}

#[derive(Deserialize)]
struct TimeQuery {
    time: Option<f64>,
}

async fn remove_stop(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path((vehicle, stop)): Path<(String, String)>,
    Query(q): Query<TimeQuery>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(q.time)?;
    let vehicle = web.node.vehicle_of(&c.who, &vehicle)?;
    let stop = web.node.stop_of(&c.who, &stop)?;
    run(&web, &c, Command::RemoveStop { vehicle, stop }, time).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderJson {
    #[serde(default)]
    time: Option<f64>,
    order: Vec<String>,
}

async fn reorder(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(vehicle): Path<String>,
    Body(o): Body<OrderJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(o.time)?;
    let vehicle = web.node.vehicle_of(&c.who, &vehicle)?;
    let order = o
        .order
        .iter()
        .map(|n| web.node.stop_of(&c.who, n))
        .collect::<Result<_, _>>()?;
    run(&web, &c, Command::Reorder { vehicle, order }, time).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CompleteJson {
    #[serde(default)]
    time: Option<f64>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    signature_ref: Option<String>,
    #[serde(default)]
    photo_refs: Vec<String>,
    /// `[lat, lon]` where the driver completed it.
    #[serde(default)]
    position: Option<[f64; 2]>,
}

/// Most photos with one proof of delivery, as on the QUIC side.
const MAX_PHOTOS: usize = 64;

async fn complete(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(stop): Path<String>,
    Body(p): Body<CompleteJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(p.time)?;
    let (stop, vehicle) = web.node.stop_owner(&c.who, &stop)?;
    if p.photo_refs.len() > MAX_PHOTOS {
        return Err(ApiError::bad_value(format!("at most {MAX_PHOTOS} photos")));
    }
    let pos = match p.position {
        Some([lat, lon]) => Some(
            dispatch::position(lat, lon)
                .ok_or_else(|| ApiError::bad_value("proof position out of range"))?,
        ),
        None => None,
    };
    let proof = ProofOfDelivery {
        photo_refs: p.photo_refs,
        signature_ref: p.signature_ref.filter(|s| !s.is_empty()),
        note: p.note.filter(|s| !s.is_empty()),
        pos,
    };
    run(
        &web,
        &c,
        Command::Complete {
            vehicle,
            stop,
            proof,
        },
        time,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailJson {
    #[serde(default)]
    time: Option<f64>,
    reason: String,
}

async fn fail(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(stop): Path<String>,
    Body(f): Body<FailJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(f.time)?;
    let (stop, vehicle) = web.node.stop_owner(&c.who, &stop)?;
    let command = Command::Fail {
        vehicle,
        stop,
        reason: f.reason,
    };
    run(&web, &c, command, time).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReassignJson {
    #[serde(default)]
    time: Option<f64>,
    to: String,
    /// Among the new vehicle's open stops (default: at the end).
    #[serde(default)]
    index: Option<usize>,
}

async fn reassign(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(stop): Path<String>,
    Body(r): Body<ReassignJson>,
) -> Result<StatusCode, ApiError> {
    require_dispatcher(&c)?;
    let time = web.node.command_time(r.time)?;
    let (stop, _) = web.node.stop_owner(&c.who, &stop)?;
    let to = web
        .node
        .create_names(&c.who, [(Kind::Vehicle, r.to.as_str())], Save::WithCommand)?[0];
    apply(&web, &c, move |e| e.reassign(stop, to, r.index, time)).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenJson {
    /// Validity, seconds of wall-clock time (60 s .. 30 days; default a day).
    #[serde(default)]
    ttl_s: Option<u64>,
}

async fn tracking_token(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(stop): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    c.require(c.who.role.may_dispatch(), "create tracking tokens")?;
    let (stop, _) = web.node.stop_owner(&c.who, &stop)?;
    // The body is optional: none, or `{"ttl_s": …}`.
    let asked: TokenJson = if body.is_empty() {
        TokenJson::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_value(e.to_string()))?
    };
    let ttl = asked.ttl_s.unwrap_or(86_400);
    let (node, who) = (web.node.clone(), c.who.clone());
    let (token, expires_ms) =
        tokio::task::spawn_blocking(move || node.mint_tracking(&who, stop, ttl))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires": expires_ms as f64 / 1000.0,
            "link": format!("/t/{token}"),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingJson {
    /// 1 to 5.
    stars: u8,
    #[serde(default)]
    comment: String,
}

const ONLY_THE_CUSTOMER: &str = "only the customer's tracking link may rate a stop";

/// The customer rates the stop their tracking token covers.
async fn rate_mine(
    web: State<Arc<Web>>,
    c: Caller,
    body: Body<RatingJson>,
) -> Result<StatusCode, ApiError> {
    let name = c.tracked_stop(ONLY_THE_CUSTOMER)?;
    rate(web, c, Path(name), body).await
}

/// The customer rates a delivered stop, once, with the stop's tracking
/// token (no other token may: the rating is the customer's word). Kept
/// with the stop's outcome, and published as a `rated` event.
async fn rate(
    State(web): State<Arc<Web>>,
    c: Caller,
    Path(name): Path<String>,
    Body(r): Body<RatingJson>,
) -> Result<StatusCode, ApiError> {
    if c.who.stop.is_none() {
        return Err(ApiError::forbidden(ONLY_THE_CUSTOMER));
    }
    let (node, who) = (web.node.clone(), c.who.clone());
    let (stop, view, _) = tokio::task::spawn_blocking(move || node.stop_for(&who, &name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let time = web.node.command_time(None)?;
    let rating = Rating {
        stars: r.stars,
        comment: r.comment.trim().to_string(),
        time,
    };
    if !rating.is_valid() {
        return Err(ApiError::bad_value(CommandError::BadRating.to_string()));
    }
    let command = Command::Rate {
        vehicle: view.record.vehicle,
        stop,
        rating,
    };
    run(&web, &c, command, time).await
}
