//! One connection to the partner: TCP, TLS, and the link protocol on top once TLS is done.

use super::*;

/// Where a connection's transport is in its life; the protocol on top is its [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// TCP connect in progress (primary).
    Connecting,
    /// TLS handshake.
    Tls,
    /// TLS done and the partner's name checked: the link runs.
    Linked,
}

pub(super) struct Conn {
    pub(super) sock: TcpStream,
    pub(super) tls: rustls::Connection,
    pub(super) peer: SocketAddr,
    pub(super) phase: Phase,
    /// The protocol, once the transport is secure.
    pub(super) link: Option<Link>,
    /// Whether the link came up (CONNECT accepted), for what its end means.
    pub(super) up: bool,
    pub(super) opened: Instant,
    /// `opened` on the thread's monotonic clock (see [`PartnerThread::now`]).
    pub(super) opened_ms: u64,
    /// The partner closed its side.
    pub(super) eof: bool,
    pub(super) closed: Option<String>,
}

impl Conn {
    pub(super) fn new(
        sock: TcpStream,
        mut tls: rustls::Connection,
        peer: SocketAddr,
        phase: Phase,
        opened_ms: u64,
    ) -> Conn {
        // rustls buffers 64 KiB of plaintext by default; a window of BNDUPDs is more. The
        // window bounds what is queued, this only catches a runaway.
        tls.set_buffer_limit(Some(SEND_BUFFER_MAX_BYTES));
        Conn {
            sock,
            tls,
            peer,
            phase,
            link: None,
            up: false,
            opened: Instant::now(),
            opened_ms,
            eof: false,
            closed: None,
        }
    }

    /// Closes the connection. A link that is up tells the partner why first (DISCONNECT,
    /// one non-blocking write; whatever does not leave at once is lost with the connection).
    pub(super) fn close(&mut self, why: impl Into<String>) {
        self.close_as(why, false);
    }

    /// [`Conn::close`], saying ServerShuttingDown in the DISCONNECT if `shutting_down`.
    pub(super) fn close_as(&mut self, why: impl Into<String>, shutting_down: bool) {
        if self.closed.is_some() {
            return;
        }
        let why = why.into();
        if let Some(l) = self.link.as_mut()
            && l.is_up()
        {
            let now = Now {
                mono_ms: self.opened_ms + self.opened.elapsed().as_millis() as u64,
                unix_secs: now_secs(),
            };
            l.close(now, why.clone(), shutting_down);
            self.transmit();
            self.flush();
        }
        self.closed = Some(why);
    }

    /// Queues plaintext for the partner.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        if self.closed.is_some() || bytes.is_empty() {
            return;
        }
        if let Err(e) = self.tls.writer().write_all(bytes) {
            self.close(format!("TLS write: {e}"));
        }
    }

    /// Moves what the link has to send into TLS.
    pub(super) fn transmit(&mut self) {
        if let Some(l) = self.link.as_mut() {
            let bytes = std::mem::take(l.take_transmit());
            self.send(&bytes);
        }
    }

    /// Whether the link is up.
    pub(super) fn is_up(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_up)
    }

    /// Moves TLS records to the socket until it would block.
    pub(super) fn flush(&mut self) {
        while self.closed.is_none() && self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.close(format!("send: {e}")),
            }
        }
    }

    /// Reads what the socket has, through TLS, into the framer (bounded per turn).
    pub(super) fn read(&mut self, plain: &mut Vec<u8>) {
        let mut budget = READ_PER_TURN_MAX_BYTES;
        while self.closed.is_none() && !self.eof && budget > 0 {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    // Closed after whatever it sent last (a refusal, a DISCONNECT): that is
                    // read first, then the connection is closed (`drive`).
                    self.eof = true;
                    break;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(format!("receive: {e}"));
                    break;
                }
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Send the alert that says why, then give up on this connection.
                self.flush();
                self.close(format!("TLS: {e}"));
                break;
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.close(format!("TLS read: {e}"));
                        break;
                    }
                }
            }
        }
    }
}
