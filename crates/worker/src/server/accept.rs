//! Accepting: the listeners, leaving a connection to a less loaded
//! sibling, the back-off after `EMFILE` and kin, and adding an accepted
//! connection to the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use mio::net::{TcpListener, TcpStream, UnixListener};
use mio::{Interest, Token};

use super::state::{Conn, Sock};
use super::{CONN_BASE, LISTENER_BASE, Server};
use crate::LEAVE_TO_SIBLING_MS;
use crate::metrics::AcceptWait;

/// Accepts per listener per loop iteration: one, as nginx without
/// `multi_accept`. Every worker sharing a listener is woken for a new
/// connection; taking one per turn lets a less busy worker (shorter turns)
/// take more of a burst. With 64, a burst of 256 keep-alive connections
/// (wrk -c256) ended 241/21 between two workers, with 20% less throughput
/// and twice the p99 of 1 (81/181 to 132/130).
pub(super) const ACCEPT_BATCH: usize = 1;

/// A listener registered with the poll (a [`crate::Listener`], non-blocking).
pub(super) enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A listener and what the loop knows of it.
pub(super) struct ListenerState {
    pub(super) sock: ListenSocket,
    pub(super) local: Option<SocketAddr>,
    pub(super) wildcard: bool,
    /// Set TCP_NODELAY on each accepted connection: false when the
    /// listener already has it, as accepted sockets inherit it.
    pub(super) set_nodelay: bool,
    pub(super) ready: bool,
    /// The accept-queue wait histogram (TCP listeners, with metrics, unless
    /// turned off).
    pub(super) wait: Option<AcceptWait>,
}

impl Server {
    pub(super) fn can_accept(&self) -> bool {
        self.listening
            && self.drain_deadline.is_none()
            && self.accept_pause_until <= self.now
            && self.nconns < self.config.worker_connections
            // All threads busy and as many requests waiting: leave new
            // connections in the backlog for less busy workers.
            && self.shared.queued.load(Relaxed) < self.threads
    }

    pub(super) fn start_listening(&mut self) -> io::Result<()> {
        if self.listening {
            return Ok(());
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let token = Token(LISTENER_BASE + i);
            match &mut l.sock {
                ListenSocket::Tcp(s) => {
                    self.poll
                        .registry()
                        .register(s, token, Interest::READABLE)?
                }
                ListenSocket::Unix(s) => {
                    self.poll
                        .registry()
                        .register(s, token, Interest::READABLE)?
                }
            }
            l.ready = true;
        }
        self.listening = true;
        self.publish_load();
        Ok(())
    }

    pub(super) fn stop_listening(&mut self) {
        if !self.listening {
            return;
        }
        for l in &mut self.listeners {
            let _ = match &mut l.sock {
                ListenSocket::Tcp(s) => self.poll.registry().deregister(s),
                ListenSocket::Unix(s) => self.poll.registry().deregister(s),
            };
            l.ready = false;
        }
        self.listening = false;
        self.publish_load();
    }

    pub(super) fn accept_all(&mut self) {
        self.publish_load();
        if !self.listeners.iter().any(|l| l.ready) {
            self.leaving_since = None;
            return;
        }
        if self.leave_to_sibling() {
            return;
        }
        for i in 0..self.listeners.len() {
            let mut n = 0;
            while self.listeners[i].ready && n < ACCEPT_BATCH && self.can_accept() {
                if !self.accept_one(i) {
                    break;
                }
                n += 1;
            }
        }
        if self.nconns >= self.config.worker_connections {
            self.stop_listening();
        }
    }

    /// Whether to leave the waiting connections to a sibling holding
    /// clearly fewer connections (more than an eighth fewer, and at least
    /// two). Every worker was told of them, so the sibling takes them on its
    /// next turn; after [`LEAVE_TO_SIBLING_MS`] without that, this worker
    /// takes one (and then leaves the next one again).
    pub(super) fn leave_to_sibling(&mut self) -> bool {
        let Some(least) = self.siblings.as_ref().and_then(|s| s.least_loaded()) else {
            self.leaving_since = None;
            return false;
        };
        if self.nconns <= least + 1 + least / 8 {
            self.leaving_since = None;
            return false;
        }
        match self.leaving_since {
            None => {
                self.leaving_since = Some(self.now);
                true
            }
            Some(t) if self.now < t + LEAVE_TO_SIBLING_MS => true,
            Some(_) => {
                self.leaving_since = None;
                false
            }
        }
    }

    /// `nconns` changed: the stats, the gauge and the siblings hear of it.
    pub(super) fn connections_changed(&mut self) {
        self.shared
            .stats
            .active_connections
            .store(self.nconns, Relaxed);
        self.shared.metrics.active_connections(self.nconns);
        self.publish_load();
    }

    /// Tell the siblings how many connections this worker holds, or that
    /// it does not accept now (draining, at `worker_connections`, or every
    /// pool thread busy with as many requests waiting): only changes.
    pub(super) fn publish_load(&mut self) {
        let Some(s) = &self.siblings else {
            return;
        };
        let accepting = self.listening
            && self.drain_deadline.is_none()
            && self.shared.queued.load(Relaxed) < self.threads;
        let load = accepting.then_some(self.nconns);
        if load != self.published {
            self.published = load;
            s.publish(load);
        }
    }

    /// Accept one connection; false when none was accepted.
    pub(super) fn accept_one(&mut self, i: usize) -> bool {
        let l = &mut self.listeners[i];
        let accepted = match &l.sock {
            ListenSocket::Tcp(s) => s.accept().map(|(sock, peer)| {
                if let Some(wait) = &l.wait {
                    observe_accept_wait(wait, &sock);
                }
                if l.set_nodelay {
                    let _ = sock.set_nodelay(true);
                }
                let local = if l.wildcard {
                    sock.local_addr().ok()
                } else {
                    l.local
                };
                (Sock::Tcp(sock), Some(peer), local)
            }),
            ListenSocket::Unix(s) => s.accept().map(|(sock, _)| (Sock::Unix(sock), None, None)),
        };
        match accepted {
            Ok((sock, peer, local)) => {
                self.add_conn(sock, peer, local);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.ready = false;
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                true
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retry in a moment rather
                // than spin on a listener that stays readable.
                self.accept_pause_until = self.now + 100;
                if self.now >= self.accept_error_logged + 1000 || self.accept_error_logged == 0 {
                    self.accept_error_logged = self.now.max(1);
                    slog::error!(self.logger, "accept() failed: {}", e);
                }
                false
            }
        }
    }

    pub(super) fn add_conn(
        &mut self,
        mut sock: Sock,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) {
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = Token(CONN_BASE + idx);
        let r = match &mut sock {
            Sock::Tcp(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            Sock::Unix(s) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            // Nothing to poll: the test drives the connection.
            #[cfg(test)]
            Sock::Mem(_) => Ok(()),
        };
        if let Err(e) = r {
            slog::error!(self.logger, "cannot register a connection: {}", e);
            self.free.push(idx as u32);
            return;
        }
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        self.conns[idx] = Some(Conn::new(sock, generation, peer, local));
        self.nconns += 1;
        self.connections_changed();
        let first_byte = match (self.drain_deadline, self.head_deadline()) {
            (Some(_), 0) => self.drain_idle_deadline(),
            (Some(_), d) => self.drain_idle_deadline().min(d),
            (None, d) => d,
        };
        self.set_deadline(idx, first_byte);
        self.drive(idx);
    }
}

/// Records how long a connection just accepted waited in the listen queue
/// (a lower bound read from TCP_INFO: see
/// [`ferrocorn_tcpinfo::accept_queue_wait`]). A socket the kernel cannot
/// say it for is not observed: the histogram never gets a made-up zero.
#[cfg(feature = "metrics")]
pub(super) fn observe_accept_wait(wait: &AcceptWait, sock: &TcpStream) {
    if let Ok(d) = ferrocorn_tcpinfo::accept_queue_wait(sock) {
        wait.observe(d);
    }
}

/// Without metrics there is no histogram (and no listener has one).
#[cfg(not(feature = "metrics"))]
pub(super) fn observe_accept_wait(_wait: &AcceptWait, _sock: &TcpStream) {}

/// Whether connections accepted from `l` start with TCP_NODELAY. Linux
/// copies the option from the listening socket to every socket it accepts,
/// and the supervisor sets it on each TCP listener, so a worker does not
/// repeat it with one `setsockopt` per connection (nginx does not either); a
/// listener without it (one handed over by systemd, say) keeps the per
/// connection call. Elsewhere the call is always made.
pub(super) fn nodelay_inherited(l: &std::net::TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        socket2::SockRef::from(l).tcp_nodelay().unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = l;
        false
    }
}
