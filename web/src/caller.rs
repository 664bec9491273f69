//! Who is asking: the bearer token of the `Authorization` header, or (for
//! a browser's `EventSource`, which cannot set headers) a `token` query
//! parameter, checked against the node's tokens (guessing from one address
//! slowed by the node's guard, as at the QUIC door); and how that caller names
//! vehicles and stops (its fleet's names, `lastmile_node::ids`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use lastmile_engine::fleet::{StopId, VehicleId};
use lastmile_node::auth::Principal;
use lastmile_node::guard::{Gate, token_key};
use lastmile_node::ids::{IdError, Kind};

use crate::{ApiError, Web};

/// An authenticated request's caller.
pub struct Caller {
    pub who: Principal,
    web: Arc<Web>,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Waits as the node's guard says before a credential from `ip` is
/// checked (after wrong ones from there, checks are spaced out), or
/// refuses when the queue of checks from there is too long. `what`: what
/// the credentials are called, for the refusal.
pub async fn gate(
    node: &lastmile_node::Node,
    ip: std::net::IpAddr,
    key: u64,
    what: &str,
) -> Result<(), ApiError> {
    match node.guard.gate(ip, key) {
        Gate::Now => Ok(()),
        Gate::After(wait) => {
            tokio::time::sleep(wait).await;
            Ok(())
        }
        Gate::Refused => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_exceeded",
            format!("too many wrong {what} from this address: try again in a minute"),
        )),
    }
}

impl FromRequestParts<Arc<Web>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .map(str::to_string);
        let token = match header {
            Some(t) => t,
            None => Query::<TokenQuery>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|q| q.0.token)
                .ok_or_else(ApiError::unauthenticated)?,
        };
        // The same per-address limit on guessing as at the QUIC door (the
        // node's guard): after wrong tokens, checks from that address are
        // spaced out; tokens that got in from it before never wait.
        let ip = parts
            .extensions
            .get::<ConnectInfo<crate::Peer>>()
            .map(|c| c.0.0.ip());
        let key = token_key(&token);
        if let Some(ip) = ip {
            gate(&web.node, ip, key, "tokens").await?;
        }
        let Some(who) = web.node.auth.authenticate(&token) else {
            if let Some(ip) = ip {
                web.node.guard.auth_failed(ip);
            }
            return Err(ApiError::unauthenticated());
        };
        if let Some(ip) = ip {
            web.node.guard.auth_succeeded(ip, key);
        }
        Ok(Self {
            who,
            web: web.clone(),
        })
    }
}

fn refusal(e: IdError) -> ApiError {
    match e {
        IdError::Invalid(m) => ApiError::bad_value(m),
        IdError::Full(_) => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "limit_exceeded",
            e.to_string(),
        ),
        IdError::Unavailable(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            e.to_string(),
        ),
    }
}

impl Caller {
    /// Refused unless `ok`, saying what the role may not do.
    pub fn require(&self, ok: bool, what: &str) -> Result<(), ApiError> {
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not {what}",
                self.who.role.as_str()
            )))
        }
    }

    /// The engine id of a vehicle the caller names (it must exist by that name).
    pub fn vehicle_of(&self, name: &str) -> Result<VehicleId, ApiError> {
        self.web
            .node
            .find_name(&self.who, Kind::Vehicle, name)
            .map_err(refusal)?
            .ok_or_else(|| ApiError::no_vehicle(name))
    }

    /// The engine id of a stop the caller names (it must exist by that name).
    pub fn stop_of(&self, name: &str) -> Result<StopId, ApiError> {
        self.web
            .node
            .find_name(&self.who, Kind::Stop, name)
            .map_err(refusal)?
            .ok_or_else(|| ApiError::no_stop(name))
    }

    /// The name of the stop a tracking token covers; refused, saying
    /// `refusal`, for any other token.
    pub fn tracked_stop(&self, refusal: &str) -> Result<String, ApiError> {
        match self.who.stop {
            Some(id) => Ok(self.name(Kind::Stop, id)),
            None => Err(ApiError::forbidden(refusal)),
        }
    }

    /// How the caller names an engine id.
    pub fn name(&self, kind: Kind, id: u64) -> String {
        self.web.node.name_of(&self.who, kind, id, false)
    }

    /// Whether the caller's fleet holds `vehicle`.
    pub fn covers(&self, vehicle: VehicleId) -> bool {
        self.web.node.auth.covers(&self.who, vehicle)
    }

    /// What the driver app reporting for `vehicle` last said, if the
    /// caller's fleet holds it and a listed device reports for it.
    pub fn device_report(
        &self,
        vehicle: VehicleId,
    ) -> Option<(
        lastmile_node::devices::App,
        lastmile_node::devices::Reported,
    )> {
        if !self.covers(vehicle) {
            return None;
        }
        self.web.node.devices.reported_by(vehicle)
    }

    /// Event `id` of the log as JSON, under the caller's names.
    pub fn event(&self, id: u64, e: &lastmile_engine::fleet::Event) -> serde_json::Value {
        lastmile_node::event_json::event(&self.web.node, &self.who, id, e)
    }
}
