//! Who is asking: the bearer token of the `Authorization` header, or (for
//! a browser's `EventSource`, which cannot set headers) a `token` query
//! parameter, checked against the node's tokens; and how that caller names
//! vehicles and stops (its fleet's names, `lastmile_node::ids`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use lastmile_engine::fleet::{StopId, VehicleId};
use lastmile_node::auth::Principal;
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
        let who = web
            .node
            .auth
            .authenticate(&token)
            .ok_or_else(ApiError::unauthenticated)?;
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

    /// How the caller names an engine id.
    pub fn name(&self, kind: Kind, id: u64) -> String {
        self.web.node.name_of(&self.who, kind, id, false)
    }

    /// Whether the caller's fleet holds `vehicle`.
    pub fn covers(&self, vehicle: VehicleId) -> bool {
        self.web.node.auth.covers(&self.who, vehicle)
    }
}
