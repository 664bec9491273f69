//! The two pages people look at, served from the binary: the customer's
//! tracking page (`/t/<tracking token>`) and the dispatcher's live map
//! (`/dispatch`), with their scripts, style and the map library (Leaflet,
//! from the npm registry by `build.rs`; its licence at
//! `/assets/leaflet-LICENSE.txt`). The pages hold no data: they ask the
//! JSON API and the feeds with the token they were given, so they see
//! exactly what that token may see.
//!
//! The tracking token is in the page's address, so every page is sent with
//! `Referrer-Policy: no-referrer` (no link leaks it) and a content security
//! policy that allows this server only.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::Web;

macro_rules! npm {
    ($path:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/npm/node_modules/", $path))
    };
}

/// A file the pages load: name under `/assets/`, content type, bytes.
struct Asset {
    name: &'static str,
    kind: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "leaflet.js",
        kind: JS,
        body: npm!("leaflet/dist/leaflet.js"),
    },
    Asset {
        name: "leaflet.css",
        kind: CSS,
        body: npm!("leaflet/dist/leaflet.css"),
    },
    Asset {
        name: "leaflet-LICENSE.txt",
        kind: "text/plain; charset=utf-8",
        body: npm!("leaflet/LICENSE"),
    },
    Asset {
        name: "map.js",
        kind: JS,
        body: include_bytes!("../pages/map.js"),
    },
    Asset {
        name: "track.js",
        kind: JS,
        body: include_bytes!("../pages/track.js"),
    },
    Asset {
        name: "dispatch.js",
        kind: JS,
        body: include_bytes!("../pages/dispatch.js"),
    },
    Asset {
        name: "style.css",
        kind: CSS,
        body: include_bytes!("../pages/style.css"),
    },
];

const TRACK_HTML: &str = include_str!("../pages/track.html");
const DISPATCH_HTML: &str = include_str!("../pages/dispatch.html");

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dispatch") }))
        .route("/dispatch", get(|| async { page(DISPATCH_HTML) }))
        .route(
            "/t/{token}",
            get(|_: Path<String>| async { page(TRACK_HTML) }),
        )
        .route("/assets/{name}", get(asset))
}

/// Headers every page and asset carries.
fn secure(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    );
}

fn page(html: &'static str) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response();
    secure(r.headers_mut());
    r
}

/// An asset, with an `ETag` of its bytes: a browser revalidates and gets
/// `304` until the binary changes.
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let tag = format!("\"{:016x}\"", fnv1a(a.body));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag);
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.kind)], a.body).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    r
}

/// FNV-1a, enough to tell one build's asset from another's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
