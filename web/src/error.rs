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
            K::WrongVehicle | K::DuplicateStop | K::StopClosed | K::Conflict => {
                StatusCode::CONFLICT
            }
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

/// `resp` with an error body in JSON, if it is a refusal in plain text.
async fn as_json(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if status.as_u16() < 400 || json {
        return resp;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "frame_too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_value",
    };
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// Counts every request, and what was refused by status. A refusal the
/// framework made itself (a path that does not decode, no such route, a
/// method the route does not take, a body too large) is rewritten as JSON
/// `{code, message}` like every other.
pub async fn count(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let stats = &web.stats;
    HttpStats::add(&stats.requests, 1);
    let resp = as_json(next.run(req).await).await;
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
