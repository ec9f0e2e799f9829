//! One WebSocket connection from subscription to close: the event loop that ties the peer's
//! frames, the hub's events, the sends in flight and the timers together.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::dedup::Dedup;
use super::outbox::Outbox;
use super::pipeline::Pipeline;
use super::protocol::Close;
use super::subscription::{Following, Scope};
use super::upgrade::Prefetched;
use crate::connections::{ConnectionSlot, ReplayPermit};

use crate::hub::{Missed, Subscription};
use crate::model::{Seq, User};
use crate::state::AppState;

pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a session ended.
pub(crate) enum End {
    /// The peer went away or the socket failed: nothing more to say.
    Gone,
    /// Close with this code and reason.
    Close(Close),
}

/// A client resuming with `?since=`, and the replay permit the upgrade took for it.
pub(crate) struct Resume {
    pub(crate) since: Seq,
    /// Held until the replay is over.
    pub(crate) _permit: ReplayPermit,
}

/// One WebSocket connection.
pub(crate) struct Session {
    /// The user, the scope, and the state they are served from.
    pub(super) follow: Following,
    pub(super) out: Outbox,
    /// Sends in flight and replies waiting behind them, in frame order.
    pub(super) pipeline: Pipeline,
    /// What this socket was sent, and so what it must not be sent again.
    pub(super) dedup: Dedup,
    pub(super) last_heard: Instant,
    /// Held for the life of the connection; ends it when its token is revoked.
    slot: ConnectionSlot,
}

impl Session {
    pub(crate) async fn run(
        state: AppState,
        out: Outbox,
        user: User,
        scope: Scope,
        resume: Option<Resume>,
        prefetched: Option<Prefetched>,
        slot: ConnectionSlot,
    ) {
        let room_socket = matches!(scope, Scope::Room(_));
        let mut session = Session {
            dedup: Dedup::new(
                user.id,
                room_socket,
                resume.as_ref().map_or(Seq(0), |r| r.since),
            ),
            follow: Following { state, user, scope },
            out,
            pipeline: Pipeline::new(room_socket),
            last_heard: Instant::now(),
            slot,
        };
        // Subscribe first, then read: nothing committed in between can be missed.
        let end = match Box::pin(session.follow.subscribe(prefetched)).await {
            Ok((mut events, current)) => {
                let end = match Box::pin(session.start(resume, current)).await {
                    Ok(()) => session.serve(&mut events).await,
                    Err(end) => end,
                };
                drop(events);
                Box::pin(session.follow.unsubscribe()).await;
                end
            }
            Err(end) => end,
        };
        if let End::Close(close) = end {
            session.out.close(close).await;
        }
    }

    async fn serve(&mut self, events: &mut Subscription) -> End {
        let limits = &self.follow.state.config.limits;
        let ping_every = Duration::from_secs(limits.ws_ping_interval_secs);
        let idle = Duration::from_secs(limits.ws_idle_timeout_secs);
        let mut ping = interval_at(Instant::now() + ping_every, ping_every);
        // After a stall, one tick, not every tick missed meanwhile.
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Shutdown (1001) or the user's deactivation (1008) ends the session.
        let user = self.follow.user.id;
        let mut stop = std::pin::pin!(self.follow.state.lifecycle.session_end(user));
        loop {
            let reading = self.pipeline.has_room();
            let step = tokio::select! {
                end = &mut stop => Err(End::Close(end.into())),
                reply = self.pipeline.settled(), if !self.pipeline.is_empty() => match reply {
                    Ok(Some(reply)) => self.out.write(reply).await,
                    Ok(None) => Ok(()),
                    Err(end) => Err(end),
                },
                // Also flushes the presence frames that fall due.
                frame = self.out.next(reading) => match frame {
                    Ok(Some(Ok(frame))) => {
                        self.last_heard = Instant::now();
                        Box::pin(self.on_frame(frame)).await
                    }
                    Ok(Some(Err(e))) => Err(close_for(&e)),
                    Ok(None) => Err(End::Gone),
                    Err(end) => Err(end),
                },
                event = events.recv() => match event {
                    Ok(event) => self.deliver(event, events).await,
                    Err(Missed::Lagged) => Box::pin(self.resync()).await,
                    Err(Missed::Closed) => Err(End::Close(Close::SHUTDOWN)),
                },
                () = self.slot.ended() => Err(End::Close(Close::SESSION_ENDED)),
                due = ping.tick() => {
                    self.pipeline.shrink();
                    // A tick this late means the process itself did not run (stopped, or its
                    // host stalled): the peer could not be heard meanwhile, so its silence
                    // counts from now, not from before the stall.
                    if due.elapsed() > ping_every {
                        self.last_heard = Instant::now();
                    }
                    if self.last_heard.elapsed() > idle {
                        Err(End::Gone)
                    } else {
                        self.out.write(WsMessage::Ping(Default::default())).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }
}

pub(crate) fn close_for(e: &tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => End::Close(Close::TOO_BIG),
        Error::Protocol(_) | Error::Utf8(_) => End::Close(Close::PROTOCOL_ERROR),
        _ => End::Gone,
    }
}
