//! The web client at `/`: an HTML page, its script, stylesheet, icons, web app manifest and
//! service worker, embedded in the binary so a LAN user needs nothing but a browser.
//!
//! The page gets its own Content-Security-Policy, stricter than any inline-script page could
//! have: scripts, styles and connections from this origin only, no inline code, no framing.
//! `routes::routes` applies its API-wide policy only where a response has none, so this one
//! stands.
//!
//! The service worker (`/assets/sw.js`, allowed the scope `/` by its `Service-Worker-Allowed`
//! header, so that it controls the whole origin) keeps the page's files for offline use under
//! a cache named after the client's version: a digest of every file served here. A new build
//! of the client is a new `sw.js`, which the browser installs in place of the old one; the
//! page then reloads into the new client.
//!
//! `[web] dir` (`--web-dir`) serves the files from a directory instead, as they are at each
//! request, for working on the client without rebuilding the server.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use warp::http::{HeaderName, HeaderValue};

use crate::state::AppState;

/// The policy of the page. `connect-src 'self'` covers the same-origin `ws:`/`wss:` socket;
/// `worker-src` and `manifest-src` admit the service worker and the manifest, from here only.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: blob:; manifest-src 'self'; worker-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What `sw.js` says where the client's version goes.
const VERSION_PLACEHOLDER: &str = "__CLIENT_VERSION__";

/// One file of the client: its name under `web/`, its type, and the copy built in.
struct File {
    name: &'static str,
    content_type: &'static str,
    embedded: &'static [u8],
}

macro_rules! client_file {
    ($name:literal, $type:literal) => {
        File {
            name: $name,
            content_type: $type,
            embedded: include_bytes!(concat!("../web/", $name)),
        }
    };
}

/// Every file of the client; the version is a digest of all of them, in this order.
const FILES: &[File] = &[
    client_file!("index.html", "text/html; charset=utf-8"),
    client_file!("app.js", "text/javascript; charset=utf-8"),
    client_file!("app.css", "text/css; charset=utf-8"),
    client_file!("icon.svg", "image/svg+xml"),
    client_file!("icon-192.png", "image/png"),
    client_file!("icon-512.png", "image/png"),
    client_file!("icon-maskable-512.png", "image/png"),
    client_file!("manifest.webmanifest", "application/manifest+json"),
    client_file!("sw.js", "text/javascript; charset=utf-8"),
];

/// The files served under `/assets/`: all but the page, which is `/`.
const ASSETS: &[&str] = &[
    "app.js",
    "app.css",
    "icon.svg",
    "icon-192.png",
    "icon-512.png",
    "icon-maskable-512.png",
    "manifest.webmanifest",
    "sw.js",
];

/// The embedded client's version, worked out once.
static EMBEDDED_VERSION: LazyLock<String> =
    LazyLock::new(|| version(FILES.iter().map(|f| f.embedded)));

/// The first 16 hex digits of a SHA-256 of `files`, each preceded by its length.
fn version<'a>(files: impl Iterator<Item = &'a [u8]>) -> String {
    let mut digest = Sha256::new();
    for bytes in files {
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    }
    hex::encode(&digest.finalize()[..8])
}

/// Where the files come from: the binary, or `[web] dir`.
#[derive(Clone)]
struct Source {
    dir: Option<PathBuf>,
}

impl Source {
    /// The contents of `file`: from the directory if one is set and has it, else built in.
    async fn read(&self, file: &File) -> Vec<u8> {
        if let Some(dir) = &self.dir {
            match tokio::fs::read(Path::new(dir).join(file.name)).await {
                Ok(bytes) => return bytes,
                Err(e) => tracing::debug!(file = file.name, error = %e,
                    "web.dir has no such file; serving the built-in one"),
            }
        }
        file.embedded.to_vec()
    }

    /// The version of the client as served now.
    async fn version(&self) -> String {
        if self.dir.is_none() {
            return EMBEDDED_VERSION.clone();
        }
        let mut all = Vec::with_capacity(FILES.len());
        for file in FILES {
            all.push(self.read(file).await);
        }
        version(all.iter().map(Vec::as_slice))
    }

    async fn serve(&self, name: &str) -> warp::reply::Response {
        let file = FILES
            .iter()
            .find(|f| f.name == name)
            .expect("a file of the client");
        if file.name == "sw.js" {
            let script = String::from_utf8_lossy(&self.read(file).await)
                .replace(VERSION_PLACEHOLDER, &self.version().await);
            // Like every response of this server it carries `Cache-Control: no-store`
            // (`routes::security_headers`): the browser asks for it afresh at each check, so an
            // upgraded server's worker is found at once.
            let mut response = page(script.into_bytes(), file.content_type);
            // From `/assets/`, it may still control every page of the origin.
            response.headers_mut().insert(
                HeaderName::from_static("service-worker-allowed"),
                HeaderValue::from_static("/"),
            );
            return response;
        }
        page(self.read(file).await, file.content_type)
    }
}

/// `GET /`, `GET /assets/<file>`: the client (its manifest and service worker among the
/// assets); `GET /chats/` and `GET /chat/<room_id>/` (where the seed served its pages) redirect
/// to its room list and to that room.
pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let source = Source {
        dir: state.config.web.dir.clone(),
    };
    let with_source = warp::any().map(move || source.clone());
    let index = warp::path::end()
        .and(warp::get())
        .and(with_source.clone())
        .then(|source: Source| async move { source.serve("index.html").await });
    let asset = warp::path!("assets" / String)
        .and(warp::get())
        .and(with_source)
        .and_then(|name: String, source: Source| async move {
            match ASSETS.iter().find(|a| **a == name) {
                Some(name) => Ok(source.serve(name).await),
                None => Err(warp::reject::not_found()),
            }
        });
    // The seed's own pages, its room list and one room, open the same views of this client.
    let seed_rooms = warp::path!("chats")
        .and(warp::get())
        .map(|| redirect("/".to_string()));
    let seed_room =
        warp::path!("chat" / String)
            .and(warp::get())
            .and_then(|room_id: String| async move {
                // Room ids are letters and digits; anything else is no room of ours, and is kept
                // out of the `Location` header.
                if !crate::chat::plausible_public_id(&room_id) {
                    return Err(warp::reject::not_found());
                }
                Ok(redirect(format!("/#/c/{room_id}")))
            });
    index
        .or(asset)
        .unify()
        .or(seed_rooms)
        .unify()
        .or(seed_room)
        .unify()
        .boxed()
}

/// A `302 Found` to `location` on this server.
fn redirect(location: String) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(Default::default());
    *response.status_mut() = warp::http::StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn page(body: Vec<u8>, content_type: &'static str) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_has_a_place_for_the_version_and_the_version_is_short_hex() {
        let sw = FILES.iter().find(|f| f.name == "sw.js").unwrap();
        assert!(
            String::from_utf8_lossy(sw.embedded).contains(VERSION_PLACEHOLDER),
            "sw.js names its cache after {VERSION_PLACEHOLDER}"
        );
        assert_eq!(EMBEDDED_VERSION.len(), 16);
        assert!(EMBEDDED_VERSION.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            version([b"a".as_slice(), b"bc"].into_iter()),
            version([b"ab".as_slice(), b"c"].into_iter())
        );
    }
}
