//! The accept loop: HTTP/1.1 over TCP or TLS, connection timeouts, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use crate::admission::{Admission, Conn, ConnTicket, RESERVED_DESCRIPTORS, raise_descriptor_limit};
use crate::metrics::METRICS;
use crate::routes::routes;
use crate::state::{AppState, ClientAddr};

/// How long shutdown waits for requests in flight and for sockets to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last writes to commit and the WAL checkpoint.
const CLOSE_DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a connection refused by the caps, before its request is read.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Retry-After: 5\r\n\
Content-Type: application/json\r\n\
Content-Length: 83\r\n\
Connection: close\r\n\r\n\
{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many connections; retry after 5 s\"}}";

/// Serves one connection over HTTP/1.1, with upgrades (WebSockets), until it ends; once
/// `stop` turns true it finishes the request in flight and closes. Request heads must arrive
/// within `header_timeout`, which also closes idle keep-alive connections.
///
/// HTTP/1.1 only, in clear text and over TLS (whose ALPN offers only `http/1.1`): HTTP/2 has
/// no such bound on idle connections, so a client opening with the HTTP/2 preface could
/// otherwise hold a connection open forever. It is answered as a malformed HTTP/1 request and
/// the connection is closed. (hyper-util's automatic builder would switch to HTTP/2 on the
/// preface even when told to speak HTTP/1 only.)
async fn serve_http1<I, S, B>(
    io: I,
    service: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    conn: Arc<Conn>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper never times out a request head: a client sending its headers a
    // byte at a time, or idling on keep-alive, would hold the connection forever.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connection = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
    tokio::select! {
        result = &mut connection => return result,
        _ = stop.wait_for(|stop| *stop) => {}
        // Shed to make room: closes at once if idle, else after the request in flight.
        () = conn.shed.notified() => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Drives `connection`, but drops it if no request has started within `timeout`: hyper's
/// header timeout only starts once the client has sent something, so a client that connects
/// and stays silent would otherwise hold the connection forever. `None` if dropped.
async fn first_request_within<F: Future>(
    connection: F,
    served: &AtomicBool,
    timeout: Duration,
) -> Option<F::Output> {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        output = &mut connection => Some(output),
        () = tokio::time::sleep(timeout) => {
            if served.load(Ordering::Relaxed) {
                Some(connection.await)
            } else {
                None
            }
        }
    }
}

/// The route whose bodies are uploads (see [`BodyDeadline::streaming`]).
const UPLOADS_PATH: &str = "/api/v1/uploads";

/// A request body that must arrive whole within a deadline counted from the end of the
/// request's headers: a client sending its body a byte at a time, or not at all, holds its
/// connection no longer than that. When the deadline passes, or the body breaks off, reading it
/// fails and `failed` says so, so the answer can say what happened (408, 400) instead of
/// reporting an internal error.
struct BodyDeadline {
    body: Incoming,
    deadline: tokio::time::Instant,
    /// For an upload: the deadline moves this far past each chunk that arrives, up to `end`.
    idle: Option<(Duration, tokio::time::Instant)>,
    /// Made the first time the body is not there yet (most bodies are there at once).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: Arc<BodyFailure>,
}

/// What went wrong with a request's body, if anything; shared with the request's answer.
#[derive(Default)]
struct BodyFailure {
    timed_out: AtomicBool,
    broken: AtomicBool,
}

impl BodyDeadline {
    fn new(body: Incoming, limit: Duration) -> (BodyDeadline, Arc<BodyFailure>) {
        let failed = Arc::new(BodyFailure::default());
        let body = BodyDeadline {
            body,
            deadline: tokio::time::Instant::now() + limit,
            idle: None,
            timer: None,
            failed: failed.clone(),
        };
        (body, failed)
    }

    /// A body that may take up to `total` as long as no gap between its chunks reaches
    /// `idle`: an upload, which a slow link needs minutes for, but a stalled one ends soon.
    fn streaming(
        body: Incoming,
        idle: Duration,
        total: Duration,
    ) -> (BodyDeadline, Arc<BodyFailure>) {
        let (mut body, failed) = BodyDeadline::new(body, idle.min(total));
        body.idle = Some((idle, tokio::time::Instant::now() + total));
        (body, failed)
    }
}

impl Body for BodyDeadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if matches!(frame, Some(Err(_))) {
                self.failed.broken.store(true, Ordering::Relaxed);
            }
            if let (Some((idle, end)), Some(Ok(_))) = (self.idle, &frame) {
                let deadline = (tokio::time::Instant::now() + idle).min(end);
                self.deadline = deadline;
                if let Some(timer) = self.timer.as_mut() {
                    timer.as_mut().reset(deadline);
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            self.failed.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl BodyFailure {
    /// The answer for a request whose body failed, instead of the one its handler gave.
    fn answer(&self) -> Option<warp::reply::Response> {
        use warp::Reply;
        if self.timed_out.load(Ordering::Relaxed) {
            Some(crate::error::ApiError::RequestTimeout.into_response())
        } else if self.broken.load(Ordering::Relaxed) {
            Some(
                crate::error::ApiError::BadRequest("the request body was cut off".into())
                    .into_response(),
            )
        } else {
            None
        }
    }
}

/// Serves the application on `listener` (over TLS when the configuration names a certificate)
/// until `shutdown` completes. Then it stops accepting, tells WebSocket clients to reconnect
/// later (close code 1001), lets requests in flight finish, commits the writes already queued,
/// checkpoints the WAL and returns, each step within a bounded time.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match (&state.config.server.tls_cert, &state.config.server.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let service = warp::service(routes(&state));
    let limits = &state.config.limits;
    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs);
    let body_timeout = Duration::from_secs(limits.body_read_timeout_secs);
    let upload_timeout = Duration::from_secs(limits.upload_timeout_secs);
    let descriptors = raise_descriptor_limit();
    let reserved = RESERVED_DESCRIPTORS + u64::from(state.config.server.read_connections);
    let admission = Admission::new(
        limits.max_tcp_connections,
        limits.max_tcp_connections_per_ip,
        descriptors,
        reserved,
    );
    if admission.max_total() < limits.max_tcp_connections {
        tracing::warn!(
            descriptors,
            cap = admission.max_total(),
            "the descriptor limit holds connections below limits.max_tcp_connections"
        );
    }
    // Accept failures (out of descriptors, say) are logged once until an accept succeeds.
    let mut accept_failing = false;
    // Turns true at shutdown; every connection holds a receiver until it is done, so the
    // sender's `closed` says when the last one finished.
    let (stop, stopping) = watch::channel(false);
    let deactivations = tokio::spawn(crate::lifecycle::watch_deactivations(state.clone()));
    let sweeper = tokio::spawn(crate::uploads::sweeper(state.clone()));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if !std::mem::replace(&mut accept_failing, true) {
                        tracing::warn!(error = %e, "accept failed (logged once until it works again)");
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if std::mem::take(&mut accept_failing) {
            tracing::info!("accepting connections again");
        }
        let conn = match admission.admit(peer.ip()) {
            Ok(conn) => conn,
            Err(_) => {
                if tls.is_none() {
                    // A fresh socket's send buffer is empty: this never waits.
                    let _ = stream.try_write(REFUSED_RESPONSE);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = METRICS.http_connections.track();
        METRICS.http_connections_total.inc();
        let service = service.clone();
        let served = Arc::new(AtomicBool::new(false));
        let first_request = served.clone();
        let ticket = conn.clone();
        let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let (parts, body) = req.into_parts();
            let (body, failed) = if parts.uri.path().starts_with(UPLOADS_PATH) {
                BodyDeadline::streaming(body, body_timeout, upload_timeout)
            } else {
                BodyDeadline::new(body, body_timeout)
            };
            let mut req = hyper::Request::from_parts(parts, body);
            req.extensions_mut().insert(ClientAddr(peer));
            req.extensions_mut().insert(ConnTicket(ticket.clone()));
            // HEAD is GET without the body: routed as GET, and hyper, which remembers the
            // method it parsed, sends the headers (Content-Length included) but no body.
            if req.method() == warp::http::Method::HEAD {
                *req.method_mut() = warp::http::Method::GET;
            }
            ticket.busy();
            let answered = service.clone().call(req);
            let ticket = ticket.clone();
            async move {
                let response = answered.await.map(|r| failed.answer().unwrap_or(r));
                let upgraded = response
                    .as_ref()
                    .is_ok_and(|r| r.status() == warp::http::StatusCode::SWITCHING_PROTOCOLS);
                ticket.done(upgraded);
                response
            }
        });
        let stopping = stopping.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let connection = serve_http1(
                        TokioIo::new(stream),
                        handler,
                        header_timeout,
                        stopping,
                        conn,
                    );
                    first_request_within(connection, &served, header_timeout).await
                }
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            METRICS.tls_handshake_failures.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            METRICS.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = serve_http1(
                        TokioIo::new(stream),
                        handler,
                        header_timeout,
                        stopping,
                        conn,
                    );
                    first_request_within(connection, &served, header_timeout).await
                }
            };
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                None => tracing::debug!(%peer, "no request within the header timeout"),
            }
            // An upgraded connection lives on in its WebSocket session; this counts until the
            // HTTP side is done with it.
            drop(open);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    tracing::info!("shutting down: no longer accepting connections");
    state.lifecycle.begin_shutdown();
    let drained = async {
        tokio::join!(stop.closed(), state.lifecycle.sessions_ended());
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(
            "some connections did not finish within {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    deactivations.abort();
    sweeper.abort();
    match tokio::time::timeout(CLOSE_DATABASE_TIMEOUT, state.store.close()).await {
        Ok(Ok(())) => tracing::info!("database closed: writes committed, WAL checkpointed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "database close incomplete"),
        Err(_) => tracing::warn!("database writer did not finish in time"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_whole_http_response_with_the_error_shape() {
        let text = std::str::from_utf8(super::REFUSED_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "rate_limited");
    }
}
