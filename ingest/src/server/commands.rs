//! Route and stop commands from dispatchers: the request turned into an
//! engine command under the caller's names (a vehicle or stop planned
//! under a new name gets an id, stored before the command runs), its time
//! checked, run off the async threads, and the engine's refusal rewritten
//! as the caller may see it (a stop of another fleet is a stop that does
//! not exist).

use lastmile_engine::fleet::{Command, CommandError, StopId};

use super::Shared;
use super::session::{Refusal, Save, Session, no_stop};
use crate::convert;
use crate::ids::Kind;
use crate::protocol::{AT_END, ErrorCode, NO_TIME, Request};

/// An engine command's refusal as the caller may see it: ids become the
/// caller's names, and one that names a stop of another fleet (closed, or
/// on another vehicle) says the stop does not exist, exactly as for an
/// unknown name.
fn refusal_of(shared: &Shared, s: &Session, e: &CommandError) -> Refusal {
    let who = &s.who;
    let foreign = |stop: StopId| {
        shared
            .sink
            .engine()
            .and_then(|en| en.stop(stop))
            .is_some_and(|v| !shared.auth.covers(who, v.record.vehicle))
    };
    let stop_name = |id| s.name(shared, Kind::Stop, id);
    let code = convert::command_error(e);
    match *e {
        CommandError::UnknownStop(stop) => no_stop(&stop_name(stop)),
        CommandError::WrongVehicle { stop, vehicle } if !shared.auth.covers(who, vehicle) => {
            no_stop(&stop_name(stop))
        }
        CommandError::WrongVehicle { stop, vehicle } => (
            code,
            format!(
                "stop {} belongs to vehicle {}",
                stop_name(stop),
                s.name(shared, Kind::Vehicle, vehicle)
            ),
        ),
        CommandError::StopClosed(stop) if foreign(stop) => no_stop(&stop_name(stop)),
        CommandError::StopClosed(stop) => (
            code,
            format!("stop {} is already completed or failed", stop_name(stop)),
        ),
        CommandError::DuplicateStop(stop) => {
            (code, format!("stop {} already exists", stop_name(stop)))
        }
        CommandError::OffRoad { stop, max_m } => (
            code,
            format!("stop {} is not within {max_m} m of a road", stop_name(stop)),
        ),
        _ => (code, e.to_string()),
    }
}

/// Command time: the client's, or the server's clock (`time_ms` 0). A
/// client's time must lie between 2000-01-01 and `max_future_s` past the
/// server's wall clock, as a ping's does: a negative or absurd time would
/// be carried into outcomes and events.
pub fn time_of(shared: &Shared, ms: i64) -> Result<f64, Refusal> {
    if ms == NO_TIME {
        return Ok(shared.clock.now());
    }
    let t = convert::secs(ms);
    let latest = super::clock::wall_s() + shared.config.limits.max_future_s;
    if (super::pings::MIN_PING_TIME_S..=latest).contains(&t) {
        Ok(t)
    } else {
        Err((
            ErrorCode::BadValue,
            format!(
                "time_ms {ms} is out of range: 0 (the server's clock), or from 2000-01-01 to {} s past the server's wall clock",
                shared.config.limits.max_future_s
            ),
        ))
    }
}

/// Runs an engine command off the async threads (it may wait for room in
/// a shard queue) and maps its refusal to what the caller may see.
pub async fn blocking(
    shared: &Shared,
    s: &Session,
    f: impl FnOnce() -> Result<(), CommandError> + Send + 'static,
) -> Result<(), Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(refusal_of(shared, s, &e)),
        Err(_) => Err((ErrorCode::Internal, "command task failed".into())),
    }
}

/// The engine command for a route/stop request, checked. A vehicle or
/// stop a dispatcher plans under a new name gets an id (stored before the
/// command runs); the others must exist by the names given.
pub async fn command(
    shared: &Shared,
    s: &Session,
    req: Request,
) -> Result<(Command, f64), Refusal> {
    Ok(match req {
        Request::AssignRoute {
            vehicle,
            time_ms,
            stops,
        } => {
            let time = time_of(shared, time_ms)?;
            let names = std::iter::once((Kind::Vehicle, vehicle.as_str()))
                .chain(stops.iter().map(|p| (Kind::Stop, p.id.as_str())));
            let ids = s.create_all(shared, names, Save::WithCommand).await?;
            let vehicle = ids[0];
            let stops = stops
                .iter()
                .zip(ids[1..].iter().copied())
                .map(|(p, id)| convert::stop_plan(p, id))
                .collect::<Result<_, _>>()?;
            (Command::AssignRoute { vehicle, stops }, time)
        }
        Request::AddStop {
            vehicle,
            time_ms,
            index,
            stop,
        } => {
            let time = time_of(shared, time_ms)?;
            let names = [(Kind::Vehicle, vehicle.as_str()), (Kind::Stop, &stop.id)];
            let ids = s.create_all(shared, names, Save::WithCommand).await?;
            let (vehicle, id) = (ids[0], ids[1]);
            let stop = convert::stop_plan(&stop, id)?;
            let index = (index != AT_END).then_some(index as usize);
            (
                Command::AddStop {
                    vehicle,
                    stop,
                    index,
                },
                time,
            )
        }
        Request::RemoveStop {
            vehicle,
            time_ms,
            stop,
        } => {
            let time = time_of(shared, time_ms)?;
            let vehicle = s.vehicle_of(shared, &vehicle)?;
            let stop = s.stop_of(shared, &stop)?;
            (Command::RemoveStop { vehicle, stop }, time)
        }
        Request::Reorder {
            vehicle,
            time_ms,
            order,
        } => {
            let time = time_of(shared, time_ms)?;
            let vehicle = s.vehicle_of(shared, &vehicle)?;
            let order = order
                .iter()
                .map(|n| s.stop_of(shared, n))
                .collect::<Result<_, _>>()?;
            (Command::Reorder { vehicle, order }, time)
        }
        Request::Complete {
            vehicle,
            time_ms,
            stop,
            proof,
        } => {
            let time = time_of(shared, time_ms)?;
            let vehicle = s.vehicle_of(shared, &vehicle)?;
            let stop = s.stop_of(shared, &stop)?;
            let proof = convert::proof(&proof)?;
            (
                Command::Complete {
                    vehicle,
                    stop,
                    proof,
                },
                time,
            )
        }
        Request::Fail {
            vehicle,
            time_ms,
            stop,
            reason,
        } => {
            let time = time_of(shared, time_ms)?;
            let vehicle = s.vehicle_of(shared, &vehicle)?;
            let stop = s.stop_of(shared, &stop)?;
            (
                Command::Fail {
                    vehicle,
                    stop,
                    reason,
                },
                time,
            )
        }
        _ => return Err((ErrorCode::Internal, "not a command".into())),
    })
}
