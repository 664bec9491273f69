//! Route and stop commands from dispatchers: the request turned into an
//! engine command under the caller's names (a vehicle or stop planned
//! under a new name gets an id, stored before the command runs), its time
//! checked, run off the async threads, and the engine's refusal rewritten
//! as the caller may see it (a stop of another fleet is a stop that does
//! not exist).

use std::sync::Arc;

use lastmile_engine::fleet::{Command, CommandError};
use lastmile_node::dispatch::Save;

use super::Shared;
use super::session::{Refusal, Session, wire};
use crate::convert;
use crate::ids::Kind;
use crate::protocol::{AT_END, ErrorCode, NO_TIME, Request, Version};

/// Command time: the client's, or the server's clock (`time_ms` 0); see
/// `Node::command_time`.
pub fn time_of(shared: &Shared, ms: i64) -> Result<f64, Refusal> {
    let t = (ms != NO_TIME).then(|| convert::secs(ms));
    shared.command_time(t).map_err(wire)
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
        Ok(Err(e)) => Err(wire(shared.refusal_of(
            &s.who,
            &e,
            s.version == Version::V1,
        ))),
        Err(_) => Err((ErrorCode::Internal, "command task failed".into())),
    }
}

/// The engine command for a route/stop request, checked. A vehicle or
/// stop a dispatcher plans under a new name gets an id (stored before the
/// command runs); the others must exist by the names given.
pub async fn command(
    shared: &Arc<Shared>,
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
            // Checked before any name is made: a refused plan leaves none behind.
            let mut plans: Vec<_> = stops
                .iter()
                .map(|p| convert::stop_plan(p, 0))
                .collect::<Result<_, _>>()?;
            let names = std::iter::once((Kind::Vehicle, vehicle.as_str()))
                .chain(stops.iter().map(|p| (Kind::Stop, p.id.as_str())));
            let ids = s.create_all(shared, names, Save::WithCommand).await?;
            for (plan, id) in plans.iter_mut().zip(&ids[1..]) {
                plan.id = *id;
            }
            (
                Command::AssignRoute {
                    vehicle: ids[0],
                    stops: plans,
                },
                time,
            )
        }
        Request::AddStop {
            vehicle,
            time_ms,
            index,
            stop,
        } => {
            let time = time_of(shared, time_ms)?;
            let mut plan = convert::stop_plan(&stop, 0)?;
            let names = [(Kind::Vehicle, vehicle.as_str()), (Kind::Stop, &stop.id)];
            let ids = s.create_all(shared, names, Save::WithCommand).await?;
            plan.id = ids[1];
            let (vehicle, stop) = (ids[0], plan);
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
        Request::Upkeep {
            vehicle,
            time_ms,
            serviced,
            odometer_m,
        } => {
            let time = time_of(shared, time_ms)?;
            let odometer_m = (!odometer_m.is_nan()).then_some(odometer_m);
            if !serviced && odometer_m.is_none() {
                let why = "an upkeep record says the vehicle was serviced or gives its odometer";
                return Err((ErrorCode::BadValue, why.into()));
            }
            // A vehicle may be recorded before it first drives.
            let vehicle = s
                .create(shared, Kind::Vehicle, &vehicle, Save::WithCommand)
                .await?;
            let cmd = Command::Upkeep {
                vehicle,
                serviced,
                odometer_m,
            };
            (cmd, time)
        }
        _ => return Err((ErrorCode::Internal, "not a command".into())),
    })
}
