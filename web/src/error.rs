//! Refusals as HTTP answers: a status and a JSON body `{"code", "message"}`
//! whose `code` is the QUIC protocol's error name (PROTOCOL.md section 6),
//! so a client handles both sides alike. Every request is counted, and
//! every refusal by kind.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{HttpStats, Web};

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The protocol's error name (`not_found`, `unknown_stop`, `forbidden` …).
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "unknown or expired token",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_value", message)
    }

    /// A vehicle that does not exist, or that the caller's fleet does not
    /// hold: the same answer.
    pub fn no_vehicle(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no vehicle {name}"),
        )
    }

    /// A stop that does not exist, or that the caller's fleet does not
    /// hold: the same answer.
    pub fn no_stop(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_stop",
            format!("no stop {name}"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<lastmile_node::dispatch::Refusal> for ApiError {
    fn from(r: lastmile_node::dispatch::Refusal) -> Self {
        use lastmile_node::dispatch::RefusalKind as K;
        let status = match r.kind {
            K::NotFound | K::UnknownStop => StatusCode::NOT_FOUND,
            K::Forbidden => StatusCode::FORBIDDEN,
            K::BadValue | K::BadOrder | K::OffRoad => StatusCode::BAD_REQUEST,
            K::WrongVehicle | K::DuplicateStop | K::StopClosed => StatusCode::CONFLICT,
            K::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            K::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, r.kind.as_str(), r.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"code": self.code, "message": self.message}));
        (self.status, body).into_response()
    }
}

/// Counts every request, and what was refused by status.
pub async fn count(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let stats = &web.stats;
    HttpStats::add(&stats.requests, 1);
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        HttpStats::add(&stats.errors, 1);
    }
    match status {
        StatusCode::UNAUTHORIZED => HttpStats::add(&stats.unauthenticated, 1),
        StatusCode::FORBIDDEN => HttpStats::add(&stats.forbidden, 1),
        _ => {}
    }
    resp
}
