//! What a client's frames do: send (pipelined), edits, deletions, read marks, typing and ping,
//! each answered in frame order.

use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::protocol::{ClientFrame, api_error_frame, error_frame, parse_frame};
use super::session::{End, Session};
use crate::chat::{self, Draft, mark_read, submit};
use crate::error::{ApiError, ErrorCode};
use crate::frames::ServerFrame;
use crate::model::MessageId;

impl Session {
    pub(super) async fn on_frame(&mut self, frame: WsMessage) -> Result<(), End> {
        match frame {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
            WsMessage::Binary(_) => {
                self.reply(error_frame(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not supported; send JSON text frames",
                ))
                .await
            }
            WsMessage::Close(_) => Err(End::Gone),
            // Pings are answered by the protocol layer; pongs only prove liveness.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Ok(()),
        }
    }

    /// Writes a reply to a frame now, or, if sends from earlier frames are still in flight,
    /// after them.
    async fn reply(&mut self, message: WsMessage) -> Result<(), End> {
        match self.pipeline.hold(message) {
            Some(message) => self.out.write(message).await,
            None => Ok(()),
        }
    }

    /// Waits for every send in flight and answers what is owed, so a frame with other effects
    /// acts after the messages sent before it, as if they had been sent one at a time.
    async fn settle_all(&mut self) -> Result<(), End> {
        while !self.pipeline.is_empty() {
            if let Some(reply) = self.pipeline.settled().await? {
                self.out.write(reply).await?;
            }
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let frame = match parse_frame(text) {
            Ok(frame) => frame,
            Err(error) => return self.reply(error).await,
        };
        let result = match frame {
            ClientFrame::Message {
                content,
                client_id,
                room_id,
                reply_to,
                attachments,
            } => {
                // Validated, rate-limited and queued now, in frame order; the outcome is
                // answered when the commit is done, in frame order too.
                let queued = match self.follow.target_room(room_id).await {
                    Ok(room) => {
                        let f = &self.follow;
                        let draft = Draft {
                            content,
                            client_id,
                            reply_to: reply_to.map(MessageId),
                            attachments,
                        };
                        submit(&f.state, &f.user, room, draft)
                    }
                    Err(e) => Err(e),
                };
                queued.map(|sending| self.pipeline.push_send(sending))
            }
            ClientFrame::Read { message_id } => {
                self.settle_all().await?;
                let f = &self.follow;
                match message_id {
                    ..=0 => Err(ApiError::NotFound),
                    id => match mark_read(&f.state, &f.user, MessageId(id)).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(ApiError::NotFound),
                        Err(e) => Err(e),
                    },
                }
            }
            // The outcome reaches every socket of the room as `message_updated`, this one too;
            // only a refusal is answered here.
            ClientFrame::Edit {
                message_id,
                content,
            } => {
                self.settle_all().await?;
                let f = &self.follow;
                chat::edit_message(&f.state, &f.user, MessageId(message_id), &content)
                    .await
                    .map(drop)
            }
            ClientFrame::Delete { message_id } => {
                self.settle_all().await?;
                let f = &self.follow;
                chat::delete_message(&f.state, &f.user, MessageId(message_id))
                    .await
                    .map(drop)
            }
            ClientFrame::React {
                message_id,
                emoji,
                on,
            } => {
                self.settle_all().await?;
                let f = &self.follow;
                chat::react(&f.state, &f.user, MessageId(message_id), &emoji, on)
                    .await
                    .map(drop)
            }
            ClientFrame::Typing { typing, room_id } => {
                self.settle_all().await?;
                self.follow.target_room(room_id).await.map(|room| {
                    let f = &self.follow;
                    chat::typing(&f.state, &f.user, &room, typing);
                })
            }
            ClientFrame::Ping => {
                let pong = WsMessage::text(ServerFrame::Pong.to_json());
                return self.reply(pong).await;
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.reply(api_error_frame(&e)).await,
        }
    }
}
