//! Sends in flight: a socket does not wait for one message's commit before reading the next
//! frame, yet every reply goes out in the order of the frames that caused it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::protocol::{Close, api_error_frame};
use super::session::End;
use crate::chat::{Sending, message_event};
use crate::error::ApiError;
use crate::model::RoomId;
use crate::store::StoreError;

/// Most sends a connection keeps waiting for their commit; past that it reads no more frames
/// until the oldest is done.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// What a socket is still owed for one frame it sent.
enum Owed {
    /// A message queued for the database: says nothing if new (the room channel brings the
    /// acknowledgement), returns the original for a repeated `client_id`, or an error.
    Send(Sending),
    /// A reply held back behind earlier sends.
    Reply(WsMessage),
}

/// What a socket is owed for the frames it sent, oldest first.
pub(crate) struct Pipeline {
    /// Allocated on the first pipelined send, so idle connections do not pay for it.
    owed: VecDeque<Owed>,
    /// A send refused because the user is no longer a member ends a room socket with
    /// [`Close::REMOVED`]; on `/ws/` it is a `not_found` error like any room the user cannot
    /// see.
    room_socket: bool,
}

impl Pipeline {
    pub(crate) fn new(room_socket: bool) -> Pipeline {
        Pipeline {
            owed: VecDeque::new(),
            room_socket,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Whether another send may be read: a full pipeline is the back-pressure.
    pub(crate) fn has_room(&self) -> bool {
        self.owed.len() < MAX_IN_FLIGHT
    }

    pub(crate) fn push_send(&mut self, sending: Sending) {
        self.owed.push_back(Owed::Send(sending));
    }

    /// `reply` back if it can be written now; kept, to go out after the sends in flight,
    /// otherwise.
    pub(crate) fn hold(&mut self, reply: WsMessage) -> Option<WsMessage> {
        if self.owed.is_empty() {
            Some(reply)
        } else {
            self.owed.push_back(Owed::Reply(reply));
            None
        }
    }

    /// Gives back what a burst of sends allocated.
    pub(crate) fn shrink(&mut self) {
        if self.owed.is_empty() {
            self.owed.shrink_to_fit();
        }
    }

    /// Resolves when the oldest entry is done, and removes it: to the reply it owes the
    /// socket, if any. Pending while nothing is owed. Cancel-safe.
    pub(crate) async fn settled(&mut self) -> Result<Option<WsMessage>, End> {
        let room_socket = self.room_socket;
        let owed = &mut self.owed;
        poll_fn(|cx| {
            let Some(front) = owed.front_mut() else {
                return Poll::Pending;
            };
            let reply = match front {
                Owed::Send(sending) => match std::task::ready!(Pin::new(sending).poll(cx)) {
                    // The new message comes back through the channel as the ack.
                    Ok((_, true)) => Ok(None),
                    // A repeated client_id: the original, to this socket only.
                    Ok((original, false)) => Ok(Some(WsMessage::Text(
                        message_event(RoomId(0), &original)
                            .frame_for(original.sender_id)
                            .into_text(),
                    ))),
                    Err(StoreError::NotMember) if room_socket => Err(End::Close(Close::REMOVED)),
                    Err(e) => Ok(Some(api_error_frame(&ApiError::from(e)))),
                },
                Owed::Reply(_) => match owed.pop_front() {
                    Some(Owed::Reply(reply)) => return Poll::Ready(Ok(Some(reply))),
                    _ => unreachable!("the front entry is a reply"),
                },
            };
            owed.pop_front();
            Poll::Ready(reply)
        })
        .await
    }
}
