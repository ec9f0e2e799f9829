//! The write side of a socket: every write has a deadline, frames are batched into one flush,
//! and presence frames wait a little so that a burst of arrivals costs one write per window.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Sleep, sleep, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::events::Events;
use super::protocol::Close;
use super::session::{End, Socket};
use crate::hub::Frame;

/// How long presence frames may wait to be written together with the ones that follow them.
/// When many people join a room at once (everyone opening the app at nine), each member's
/// socket gets one write per window instead of one per arrival; anything else that is written
/// takes the waiting presence frames with it, in order.
pub(crate) const PRESENCE_DELAY: Duration = Duration::from_millis(100);

/// How long a closing session waits for the peer to answer its close frame.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A socket and what is buffered for it.
pub(crate) struct Outbox {
    socket: Socket,
    write_timeout: Duration,
    /// The kinds of frame the client asked for; the others are dropped here.
    events: Events,
    /// When the frames buffered but not yet flushed are due; `None` when nothing waits.
    flush_due: Option<Pin<Box<Sleep>>>,
}

/// Resolves when `due` is reached; never if there is nothing due.
async fn until(due: &mut Option<Pin<Box<Sleep>>>) {
    match due {
        Some(due) => due.await,
        None => std::future::pending().await,
    }
}

impl Outbox {
    pub(crate) fn new(socket: Socket, write_timeout: Duration, events: Events) -> Outbox {
        Outbox {
            socket,
            write_timeout,
            events,
            flush_due: None,
        }
    }

    /// The next frame from the peer when `reading`; meanwhile flushes what falls due. Never
    /// resolves while not reading. Cancel-safe.
    pub(crate) async fn next(
        &mut self,
        reading: bool,
    ) -> Result<Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>, End> {
        loop {
            tokio::select! {
                frame = self.socket.next(), if reading => return Ok(frame),
                () = until(&mut self.flush_due) => self.flush().await?,
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// Buffers `frame` without flushing.
    pub(crate) async fn feed(&mut self, frame: Frame) -> Result<(), End> {
        if !self.events.allow(frame.as_str()) {
            return Ok(());
        }
        self.timed(|socket| socket.feed(WsMessage::Text(frame.into_text())))
            .await
    }

    /// Writes everything buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        self.timed(|socket| socket.flush()).await?;
        self.flush_due = None;
        Ok(())
    }

    /// Flushes within [`PRESENCE_DELAY`] unless something else flushes first.
    pub(crate) fn flush_soon(&mut self) {
        if self.flush_due.is_none() {
            self.flush_due = Some(Box::pin(sleep(PRESENCE_DELAY)));
        }
    }

    /// Writes `message` and everything buffered before it.
    pub(crate) async fn write(&mut self, message: WsMessage) -> Result<(), End> {
        if let WsMessage::Text(text) = &message
            && !self.events.allow(text.as_str())
        {
            return Ok(());
        }
        self.timed(|socket| socket.send(message)).await?;
        self.flush_due = None;
        Ok(())
    }

    async fn timed<'a, F, Fut>(&'a mut self, op: F) -> Result<(), End>
    where
        F: FnOnce(&'a mut Socket) -> Fut,
        Fut: Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
    {
        match timeout(self.write_timeout, op(&mut self.socket)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    /// Sends the close frame and waits, briefly, for the peer's.
    pub(crate) async fn close(&mut self, Close { code, reason }: Close) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = timeout(self.write_timeout, self.socket.close(Some(frame))).await;
        // The closing handshake: read (and drop) what the peer still sends until its own
        // close frame. Closing the TCP connection with unread input would make the kernel
        // reset it, and a reset can destroy the close frame before the client reads it.
        let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
    }
}
