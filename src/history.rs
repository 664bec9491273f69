//! `lastmile history`: a vehicle's finalised matched path between two times,
//! read from a server's store (or its cluster's history), as GeoJSON (one LineString per connected
//! stretch, with the time of every vertex) or CSV.

use anyhow::{Result, bail};
use clap::Args;
use lastmile_ingest::client::Client;
use lastmile_ingest::protocol::{
    NO_TIME, PATH_BREAK, PATH_INTERPOLATED, Request, Response, WirePathPoint,
};
use serde_json::{Value, json};

use crate::service::{Conn, block_on};

#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Conn,
    /// The vehicle.
    #[arg(long)]
    vehicle: String,
    /// Start of the range, seconds since the epoch (event time); open if absent.
    #[arg(long)]
    from: Option<f64>,
    /// End of the range, seconds since the epoch; open if absent.
    #[arg(long)]
    to: Option<f64>,
    /// CSV (time,lat,lon,edge,break) instead of GeoJSON.
    #[arg(long)]
    csv: bool,
}

fn ms(s: Option<f64>) -> Result<i64> {
    match s {
        None => Ok(NO_TIME),
        Some(s) if s.is_finite() && s > 0.0 => Ok((s * 1e3).round() as i64),
        Some(s) => bail!("{s} is not a time in seconds since the epoch"),
    }
}

/// Every point of the range, asking again after each truncated reply.
async fn fetch(c: &Client, vehicle: &str, from_ms: i64, to_ms: i64) -> Result<Vec<WirePathPoint>> {
    let mut points: Vec<WirePathPoint> = Vec::new();
    let mut from = from_ms;
    loop {
        let req = Request::GetHistory {
            vehicle: vehicle.to_string(),
            from_ms: from,
            to_ms,
        };
        let Response::History {
            truncated,
            points: got,
        } = c.call(&req).await?
        else {
            bail!("unexpected answer to GET_HISTORY");
        };
        let last = got.last().map(|p| p.time_ms);
        // A page after the first starts where the last one ended: the point
        // interpolated at its edge is not one of the path's own.
        let skip = usize::from(
            from != from_ms
                && got
                    .first()
                    .is_some_and(|p| p.flags & PATH_INTERPOLATED != 0),
        );
        points.extend(got.into_iter().skip(skip));
        match (truncated, last) {
            (true, Some(t)) if t >= from => from = t + 1,
            _ => return Ok(points),
        }
    }
}

/// The points as a GeoJSON FeatureCollection: a LineString per connected
/// stretch, its vertex times in `properties.times` (seconds).
pub fn geojson(vehicle: &str, points: &[WirePathPoint]) -> Value {
    let mut features = Vec::new();
    let mut stretch: Vec<&WirePathPoint> = Vec::new();
    let mut flush = |stretch: &mut Vec<&WirePathPoint>| {
        if stretch.len() >= 2 {
            features.push(json!({
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": stretch.iter()
                        .map(|p| json!([f64::from(p.lon_e7) * 1e-7, f64::from(p.lat_e7) * 1e-7]))
                        .collect::<Vec<_>>(),
                },
                "properties": {
                    "vehicle": vehicle,
                    "start": stretch[0].time_ms as f64 / 1e3,
                    "end": stretch[stretch.len() - 1].time_ms as f64 / 1e3,
                    "times": stretch.iter().map(|p| p.time_ms as f64 / 1e3).collect::<Vec<_>>(),
                },
            }));
        }
        stretch.clear();
    };
    for p in points {
        if p.flags & PATH_BREAK != 0 {
            flush(&mut stretch);
        }
        stretch.push(p);
    }
    flush(&mut stretch);
    json!({ "type": "FeatureCollection", "features": features })
}

pub fn history(a: HistoryArgs) -> Result<()> {
    let (from, to) = (ms(a.from)?, ms(a.to)?);
    let target = a.conn.target()?;
    let points = block_on(async {
        let c = Client::connect(&target).await?;
        let r = fetch(&c, &a.vehicle, from, to).await;
        c.close();
        r
    })?;
    if a.csv {
        println!("time,lat,lon,edge,break,interpolated");
        for p in &points {
            println!(
                "{:.3},{:.7},{:.7},{},{},{}",
                p.time_ms as f64 / 1e3,
                f64::from(p.lat_e7) * 1e-7,
                f64::from(p.lon_e7) * 1e-7,
                p.edge,
                u8::from(p.flags & PATH_BREAK != 0),
                u8::from(p.flags & PATH_INTERPOLATED != 0)
            );
        }
    } else {
        println!("{}", geojson(&a.vehicle, &points));
    }
    let stretches = points.iter().filter(|p| p.flags & PATH_BREAK != 0).count();
    eprintln!(
        "vehicle {}: {} points in {} stretches",
        a.vehicle,
        points.len(),
        stretches
    );
    Ok(())
}
