//! Which TCP connections the server takes: a cap in total, held below the process's
//! descriptor limit with a reserve for the listener and the database, and a cap per client
//! address. At the total cap the idle keep-alive connections that waited longest are closed to
//! make room; only if none is idle is the new connection refused.
//!
//! Without this, a few thousand keep-alive connections from one address use up the
//! descriptors, `accept` fails for everyone (and `/healthz` with it) for as long as they stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use crate::auth::ip_key;
use crate::metrics::{Bound, METRICS};

/// Descriptors kept back from connections: the listener, the database and its WAL, the
/// runtime's own, log files, and headroom for what the server opens itself.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open descriptors to the hard limit; returns the limit in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The connections taken, and the caps.
pub struct Admission {
    /// Most connections at once: the configured cap, or less if descriptors are short.
    max_total: u32,
    max_per_ip: u32,
    /// The clock of `Conn::idle_since`.
    started: Instant,
    inner: Mutex<Inner>,
    /// Whether an episode of pressure (shedding or refusing) is under way, for logging it once.
    pressed: AtomicBool,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    per_ip: HashMap<IpAddr, u32>,
    open: HashMap<u64, Weak<Conn>>,
    /// Episode counters, reported when it ends.
    shed: u64,
    refused: u64,
}

/// One connection taken: counts until the last clone is dropped. The accept task holds one,
/// every request on the connection carries one (so a WebSocket session keeps its connection
/// counted after the upgrade), and the shedder reaches it through a weak reference.
pub struct Conn {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    /// Requests being answered now.
    in_flight: AtomicU32,
    /// Milliseconds since the admission started when the connection last went idle.
    idle_since: AtomicU64,
    /// A WebSocket now: never idle in the HTTP sense.
    upgraded: AtomicBool,
    /// Told to close once its request in flight, if any, is answered.
    pub shed: Notify,
    /// Still counted under the caps (false once shed: its slot went to another).
    counted: AtomicBool,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    Total,
}

/// A clone of the connection's handle, carried in each request's extensions.
#[derive(Clone)]
pub struct ConnTicket(pub Arc<Conn>);

impl Admission {
    /// `descriptors`: the process's limit on open files; `reserved`: what the rest of the
    /// server needs of them.
    pub fn new(max_total: u32, max_per_ip: u32, descriptors: u64, reserved: u64) -> Arc<Self> {
        let fit = descriptors.saturating_sub(reserved).max(1);
        let max_total = u64::from(max_total).min(fit) as u32;
        Arc::new(Admission {
            max_total,
            max_per_ip: max_per_ip.min(max_total),
            started: Instant::now(),
            inner: Mutex::default(),
            pressed: AtomicBool::new(false),
        })
    }

    /// The cap in total, after the descriptor limit.
    pub fn max_total(&self) -> u32 {
        self.max_total
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection from `ip`, closing the longest-idle keep-alive connections if the
    /// server is full; refused (and counted) if the address has its share or nothing can be
    /// shed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Conn>, Refused> {
        let key = ip_key(ip);
        // Connections looked at while the lock is held: dropping the last handle of one runs
        // `release`, which takes the lock, so they are dropped only after it is let go.
        let mut looked_at = Vec::new();
        let mut inner = self.lock();
        let at_share = inner.per_ip.get(&key).copied().unwrap_or(0) >= self.max_per_ip;
        let refused = if at_share && !self.shed_idle(&mut inner, Some(key), &mut looked_at) {
            Some(Refused::PerIp)
        } else if inner.open.len() as u32 >= self.max_total
            && !self.shed_idle(&mut inner, None, &mut looked_at)
        {
            Some(Refused::Total)
        } else {
            None
        };
        if let Some(why) = refused {
            inner.refused += 1;
            drop(inner);
            drop(looked_at);
            METRICS.refused(match why {
                Refused::PerIp => Bound::TcpPerIp,
                Refused::Total => Bound::TcpTotal,
            });
            // One address at its share is that address's problem, not pressure on the server.
            if why == Refused::Total {
                self.pressure_begins("refusing new connections: every connection is busy");
            } else {
                tracing::debug!(%ip, "connection refused: address at its connection cap");
            }
            return Err(why);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        *inner.per_ip.entry(key).or_insert(0) += 1;
        let conn = Arc::new(Conn {
            admission: self.clone(),
            id,
            ip: key,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            upgraded: AtomicBool::new(false),
            shed: Notify::new(),
            counted: AtomicBool::new(true),
        });
        inner.open.insert(id, Arc::downgrade(&conn));
        drop(inner);
        drop(looked_at);
        Ok(conn)
    }

    /// Closes the idle keep-alive connections that waited longest (of address `of`, or of
    /// all): over all, a 64th of the cap at once, so that a stream of new connections at the
    /// cap does not search on every accept; of one address, the one. Their slots are free at
    /// once. False if none is idle.
    /// Every connection upgraded on the way ends up in `keep`, for the caller to drop once
    /// the lock is released.
    fn shed_idle(&self, inner: &mut Inner, of: Option<IpAddr>, keep: &mut Vec<Arc<Conn>>) -> bool {
        let mut idle: Vec<(u64, Arc<Conn>)> = Vec::new();
        for conn in inner.open.values().filter_map(Weak::upgrade) {
            if conn.is_idle() && of.is_none_or(|ip| conn.ip == ip) {
                idle.push((conn.idle_since.load(Ordering::Relaxed), conn));
            } else {
                keep.push(conn);
            }
        }
        if idle.is_empty() {
            return false;
        }
        let wanted = if of.is_some() {
            1
        } else {
            self.max_total as usize / 64
        };
        let batch = wanted.clamp(1, idle.len());
        if batch < idle.len() {
            idle.select_nth_unstable_by_key(batch - 1, |(since, _)| *since);
        }
        for (_, conn) in idle.iter().take(batch) {
            // Not counted out until its task ends; take it off the idle list now.
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            conn.shed.notify_one();
        }
        inner.shed += batch as u64;
        // The new connection is taken now: the shed ones are on their way out.
        for (_, conn) in idle.iter().take(batch) {
            inner.open.remove(&conn.id);
            conn.counted.store(false, Ordering::Relaxed);
            uncount(&mut inner.per_ip, conn.ip);
        }
        for _ in 0..batch {
            METRICS.refused(Bound::TcpShedIdle);
        }
        keep.extend(idle.into_iter().map(|(_, conn)| conn));
        // One address at its share is that address's matter, not pressure on the server.
        if of.is_none() {
            self.pressure_begins("closing idle keep-alive connections to make room");
        }
        true
    }

    fn pressure_begins(&self, what: &str) {
        if !self.pressed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cap = self.max_total,
                "connection cap reached: {what} (logged once until the pressure is over)"
            );
        }
    }

    fn release(&self, conn: &Conn) {
        let mut inner = self.lock();
        if conn.counted.load(Ordering::Relaxed) {
            inner.open.remove(&conn.id);
            uncount(&mut inner.per_ip, conn.ip);
        }
        // Over once the server is back under nine tenths of its cap.
        if self.pressed.load(Ordering::Relaxed)
            && (inner.open.len() as u64) * 10 < u64::from(self.max_total) * 9
        {
            self.pressed.store(false, Ordering::Relaxed);
            let (shed, refused) = (inner.shed, inner.refused);
            inner.shed = 0;
            inner.refused = 0;
            drop(inner);
            tracing::info!(shed, refused, "connection pressure over");
        }
    }

    /// Connections taken and not yet closed.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }
}

fn uncount(per_ip: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && !self.upgraded.load(Ordering::Relaxed)
    }

    /// A request arrived.
    pub fn busy(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was answered; `upgraded` if it became a WebSocket.
    pub fn done(&self, upgraded: bool) {
        if upgraded {
            self.upgraded.store(true, Ordering::Relaxed);
        }
        self.idle_since
            .store(self.admission.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.admission.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        assert_eq!(Admission::new(30_000, 2_000, 1024, 64).max_total(), 960);
        assert_eq!(
            Admission::new(30_000, 2_000, 1 << 20, 64).max_total(),
            30_000
        );
    }

    #[test]
    fn an_address_gets_its_share_and_no_more() {
        let a = Admission::new(100, 2, 1 << 20, 0);
        let one = a.admit(ip(1)).unwrap();
        one.busy();
        let two = a.admit(ip(1)).unwrap();
        two.busy();
        assert_eq!(a.admit(ip(1)).err(), Some(Refused::PerIp));
        a.admit(ip(2)).unwrap();
        two.done(false);
        // At its share, the address's own idle connection makes room.
        let three = a.admit(ip(1)).unwrap();
        three.busy();
        assert!(two.shed.notified().now_or_never().is_some());
        assert!(one.shed.notified().now_or_never().is_none());
        drop(two);
        assert_eq!(
            a.admit(ip(1)).err(),
            Some(Refused::PerIp),
            "the shed slot was reused"
        );
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_is_shed_and_busy_ones_never() {
        let a = Admission::new(3, 3, 1 << 20, 0);
        let old = a.admit(ip(1)).unwrap();
        let busy = a.admit(ip(2)).unwrap();
        busy.busy();
        let socket = a.admit(ip(3)).unwrap();
        socket.busy();
        socket.done(true);
        // `old` went idle first; `busy` is answering; `socket` is a WebSocket.
        let new = a.admit(ip(4)).unwrap();
        assert_eq!(a.open(), 3);
        // The idle one was told to close; the others were not.
        assert!(old.shed.notified().now_or_never().is_some());
        assert!(busy.shed.notified().now_or_never().is_none());
        assert!(socket.shed.notified().now_or_never().is_none());
        assert!(METRICS.refused_count(Bound::TcpShedIdle) > 0);
        drop((busy, socket, new));
    }

    /// Connections come and go on other threads while the cap sheds: a handle the shedder
    /// looked at may become the last one, and dropping it must not take the lock it holds.
    #[test]
    fn shedding_while_connections_close_elsewhere_never_deadlocks() {
        let a = Admission::new(8, 8, 1 << 20, 0);
        let (done, finished) = std::sync::mpsc::channel();
        for t in 0..4u8 {
            let a = a.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    if let Ok(conn) = a.admit(ip(t)) {
                        if i % 3 == 0 {
                            conn.busy();
                            conn.done(false);
                        }
                        drop(conn);
                    }
                }
                let _ = done.send(());
            });
        }
        for _ in 0..4 {
            finished
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("admitting and closing connections deadlocked");
        }
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn with_nothing_idle_a_new_connection_is_refused() {
        let a = Admission::new(2, 2, 1 << 20, 0);
        let one = a.admit(ip(1)).unwrap();
        one.busy();
        let two = a.admit(ip(2)).unwrap();
        two.busy();
        assert_eq!(a.admit(ip(3)).err(), Some(Refused::Total));
        two.done(false);
        a.admit(ip(3)).unwrap();
    }
}
