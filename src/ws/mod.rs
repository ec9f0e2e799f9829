//! The WebSockets: `GET /ws/chat/<room_id>/` (one room) and `GET /ws/` (all of a user's
//! rooms).
//!
//! - `upgrade`: origin, token and membership checks, then the upgrade.
//! - `protocol`: client frames, error frames and every close code.
//! - `session`: one connection's event loop, from subscription to close.
//! - `subscription`: what a socket follows: subscribing, presence, `hello`, replay and the
//!   delivery of live events.
//! - `dedup`: which events a socket is sent (de-duplication by message id).
//! - `outbox`: timed, batched writes and the coalescing of presence frames.
//! - `pipeline`: sends in flight and the replies waiting behind them.
//! - `actions`: what each client frame does.
//!
//! The upgrade is done by hand rather than with `warp::ws()` so the socket's buffers can be sized
//! (tungstenite's default 128 KiB read buffer per connection would dominate memory). Auth,
//! membership and origin are checked before the upgrade, so refusals are plain HTTP errors.
//!
//! A room socket's handshake reads the token, the membership and the room's newest message id
//! in one trip to the database. The session then subscribes, and trusts that read only if no
//! message and no removal was published in between; otherwise it reads again, after
//! subscribing. Delivery de-duplicates by message id: a resume with `?since=` replays from the
//! database and goes live with no gap and no duplicate. Frames waiting in the queue are
//! written in one flush.
//!
//! A session does not wait for one message's commit before reading the next frame: each send
//! is validated, rate-limited and queued for the writer in frame order (so one socket's
//! messages are stored in the order it sent them), and up to `MAX_IN_FLIGHT` wait for their
//! commit at once. Replies to the socket (errors, the original of a repeated `client_id`,
//! `pong`) still go out in the order of the frames that caused them.

mod actions;
mod dedup;
mod events;
mod outbox;
mod pipeline;
mod protocol;
mod session;
mod subscription;
mod upgrade;

use hyper::upgrade::OnUpgrade;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::admission::ConnTicket;
use crate::filters::{query, with_state};
use crate::state::{AppState, ClientAddr};

pub use crate::hub::presence_event;
pub use protocol::{ClientFrame, Close, diagnose, parse_frame};
use upgrade::{Peer, upgrade};
pub use upgrade::{UpgradeQuery, socket_config};

/// The client's address, and its connection's place under the TCP caps, which the socket
/// holds for as long as it is open.
fn peer() -> impl Filter<Extract = (Peer,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<ClientAddr>()
        .and(warp::ext::optional::<ConnTicket>())
        .map(|addr, conn| Peer { addr, conn })
}

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let room = warp::path!("ws" / "chat" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(query::<UpgradeQuery>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(peer())
        .and(with_state(state))
        .then(|room_id, headers, query, on_upgrade, peer, state| {
            upgrade(Some(room_id), headers, query, on_upgrade, peer, state)
        })
        .map(upgrade::counted)
        .map(Reply::into_response);
    let user = warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(query::<UpgradeQuery>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(peer())
        .and(with_state(state))
        .then(|headers, query, on_upgrade, peer, state| {
            upgrade(None, headers, query, on_upgrade, peer, state)
        })
        .map(upgrade::counted)
        .map(Reply::into_response);
    room.or(user).unify().boxed()
}
