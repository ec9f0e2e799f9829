//! The web client at `/`: an HTML page, its script, stylesheet and icon, embedded in the
//! binary so a LAN user needs nothing but a browser.
//!
//! The page gets its own Content-Security-Policy, stricter than any inline-script page could
//! have: scripts, styles and connections from this origin only, no inline code, no framing.
//! `routes::routes` applies its API-wide policy only where a response has none, so this one
//! stands.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};

use crate::state::AppState;

/// The policy of the page. `connect-src 'self'` covers the same-origin `ws:`/`wss:` socket.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON_SVG: &str = include_str!("../web/icon.svg");

/// `GET /`, `GET /assets/<file>`: the embedded client; `GET /chats/` and `GET /chat/<room_id>/`
/// (where the seed served its pages) redirect to its room list and to that room.
pub fn routes(_state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| page(INDEX_HTML, "text/html; charset=utf-8"));
    let asset =
        warp::path!("assets" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                match name.as_str() {
                    "app.js" => Ok(page(APP_JS, "text/javascript; charset=utf-8")),
                    "app.css" => Ok(page(APP_CSS, "text/css; charset=utf-8")),
                    "icon.svg" => Ok(page(ICON_SVG, "image/svg+xml")),
                    _ => Err(warp::reject::not_found()),
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
                if !crate::chat::plausible_room_id(&room_id) {
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

fn page(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}
