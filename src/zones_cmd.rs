//! `lastmile zones`: a fleet's zones on a server, from and to GeoJSON.
//! `put` sends a `FeatureCollection` (split into requests of at most
//! [`CHUNK_BYTES`] each, so a file of thousands of zones fits the
//! protocol's frames; each request is applied whole or refused whole),
//! `remove` takes zones away by id, `list` prints the fleet's zones as
//! GeoJSON, which `put` reads back.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lastmile_ingest::client::Client;
use lastmile_ingest::protocol::{NO_TIME, Request, Response};
use serde_json::{Value, json};

use crate::service::{Conn, block_on};

/// Largest GeoJSON text per request, bytes: well inside a 1 MiB frame.
const CHUNK_BYTES: usize = 768 * 1024;

#[derive(Subcommand)]
pub enum ZonesCmd {
    /// Add zones from a GeoJSON FeatureCollection (replacing those of the same ids).
    Put {
        /// The GeoJSON file (Polygons, and Points with a radius_m).
        file: PathBuf,
    },
    /// Remove zones by id.
    Remove {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print the fleet's zones as GeoJSON.
    List,
}

#[derive(Args)]
pub struct ZonesArgs {
    #[command(subcommand)]
    cmd: ZonesCmd,
    #[command(flatten)]
    conn: Conn,
}

/// The features of a collection in pieces of at most `max` bytes each
/// (a single larger feature goes alone, and the server says if it is too
/// large).
fn chunks(doc: &Value, max: usize) -> Result<Vec<String>> {
    let features = doc
        .get("features")
        .and_then(Value::as_array)
        .context("not a GeoJSON FeatureCollection (a \"features\" array)")?;
    let mut out = Vec::new();
    let (mut part, mut size) = (Vec::new(), 0);
    for f in features {
        let n = f.to_string().len() + 1;
        if !part.is_empty() && size + n > max {
            out.push(collection(std::mem::take(&mut part)));
            size = 0;
        }
        part.push(f.clone());
        size += n;
    }
    if !part.is_empty() || out.is_empty() {
        out.push(collection(part));
    }
    Ok(out)
}

fn collection(features: Vec<Value>) -> String {
    json!({"type": "FeatureCollection", "features": features}).to_string()
}

pub fn zones(a: ZonesArgs) -> Result<()> {
    let target = a.conn.target()?;
    let requests = match &a.cmd {
        ZonesCmd::Put { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            chunks(&doc, CHUNK_BYTES)?
                .into_iter()
                .map(|geojson| Request::PutZones {
                    time_ms: NO_TIME,
                    geojson,
                })
                .collect()
        }
        ZonesCmd::Remove { ids } => vec![Request::RemoveZones {
            time_ms: NO_TIME,
            zones: ids.clone(),
        }],
        ZonesCmd::List => vec![Request::GetZones],
    };
    let answers = block_on(async {
        let c = Client::connect(&target).await?;
        let mut answers = Vec::new();
        for r in &requests {
            match c.call(r).await {
                Ok(a) => answers.push(a),
                Err(e) => {
                    c.close();
                    return Err(e);
                }
            }
        }
        c.close();
        Ok(answers)
    })?;
    match (&a.cmd, answers.as_slice()) {
        (ZonesCmd::List, [Response::Zones { geojson }]) => println!("{geojson}"),
        (ZonesCmd::Put { .. }, _) => println!("ok: {} request(s)", answers.len()),
        (ZonesCmd::Remove { .. }, _) => println!("ok"),
        (_, other) => bail!("unexpected answer {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_collection_goes_in_pieces_that_keep_every_feature() {
        let features: Vec<Value> = (0..100)
            .map(|i| json!({"type": "Feature", "properties": {"id": format!("z{i}")}}))
            .collect();
        let doc = json!({"type": "FeatureCollection", "features": features});
        let parts = chunks(&doc, 1000).unwrap();
        assert!(parts.len() > 1);
        let mut ids = Vec::new();
        for p in &parts {
            assert!(p.len() < 1200, "{}", p.len());
            let v: Value = serde_json::from_str(p).unwrap();
            for f in v["features"].as_array().unwrap() {
                ids.push(f["properties"]["id"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(ids, (0..100).map(|i| format!("z{i}")).collect::<Vec<_>>());
        assert_eq!(chunks(&json!({"features": []}), 1000).unwrap().len(), 1);
        assert!(chunks(&json!({"type": "Feature"}), 1000).is_err());
    }
}
