//! TCP framing (RFC 8156 §5.1, reusing RFC 5460 §5.1): a 2-octet big-endian length that
//! counts only the message that follows, then the message.
//!
//! UNCONFIRMED (digest §10 item 7): that the length excludes its own 2 octets is confirmed
//! only through Wireshark's RFC 5460 decoder (`pdu_len = ntohs(len) + 2`).

use super::{FAILOVER_HEADER_LEN, FailoverWireError};

/// Length of the frame length prefix.
pub const FRAME_PREFIX_LEN: usize = 2;

/// Largest message a frame can carry (the 2-octet length prefix's maximum).
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Bytes a [`Framer`] buffers at most: one largest frame with its prefix. This bound is
/// enough for progress: whenever the buffer is full it holds a complete frame.
pub const FRAMER_BUFFER_LEN: usize = FRAME_PREFIX_LEN + MAX_FRAME_LEN;

/// Appends one frame (length prefix + `msg`) to `out`, which is not cleared, so several frames
/// can be batched into one send buffer.
///
/// Errors with [`FailoverWireError::TooLong`], leaving `out` unchanged, if `msg` is longer
/// than [`MAX_FRAME_LEN`].
pub fn write_frame(msg: &[u8], out: &mut Vec<u8>) -> Result<(), FailoverWireError> {
    let len = u16::try_from(msg.len()).map_err(|_| FailoverWireError::TooLong)?;
    out.reserve(FRAME_PREFIX_LEN.saturating_add(msg.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

/// Splits an incoming TCP byte stream into failover messages.
///
/// Feed received bytes with [`Framer::push`] (which takes as many as fit in its bounded
/// buffer) and take complete messages with [`Framer::next_frame`] until it returns `None`.
/// The buffer holds at most `2 + max_frame_len` bytes and is allocated once, in the
/// constructor.
///
/// A frame whose length is below the 8-octet failover header or above the maximum frame length
/// means the peer is broken or the stream is out of step: the error is sticky (every later
/// [`Framer::next_frame`] returns it and [`Framer::push`] accepts nothing), and the connection
/// must be closed.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
    max_frame_len: usize,
    failed: Option<FailoverWireError>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

impl Framer {
    /// A framer accepting frames up to [`MAX_FRAME_LEN`] bytes.
    pub fn new() -> Self {
        Framer::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A framer accepting frames up to `max_frame_len` bytes (clamped to
    /// `8..=`[`MAX_FRAME_LEN`]); longer frames are a [`FailoverWireError::FrameTooLong`] error.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        let max_frame_len = max_frame_len.clamp(FAILOVER_HEADER_LEN, MAX_FRAME_LEN);
        Framer {
            buf: Vec::with_capacity(FRAME_PREFIX_LEN + max_frame_len),
            start: 0,
            max_frame_len,
            failed: None,
        }
    }

    /// The largest frame this framer accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// The sticky framing error, if one occurred.
    pub fn error(&self) -> Option<FailoverWireError> {
        self.failed
    }

    /// Appends as much of `data` as fits in the buffer and returns how many bytes were taken.
    ///
    /// Fewer than `data.len()` are taken only when the buffer is full, which means a complete
    /// frame is waiting: drain [`Framer::next_frame`], then push the rest. Takes nothing after
    /// a framing error.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        let cap = FRAME_PREFIX_LEN.saturating_add(self.max_frame_len);
        let n = cap.saturating_sub(self.buf.len()).min(data.len());
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        n
    }

    /// The next complete message (without its length prefix), `None` if more bytes are
    /// needed, or the sticky framing error.
    pub fn next_frame(&mut self) -> Option<Result<&[u8], FailoverWireError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let avail = self.buf.get(self.start..)?;
        let (prefix, rest) = avail.split_first_chunk::<FRAME_PREFIX_LEN>()?;
        let len = usize::from(u16::from_be_bytes(*prefix));
        let err = if len < FAILOVER_HEADER_LEN {
            Some(FailoverWireError::FrameTooShort { len })
        } else if len > self.max_frame_len {
            Some(FailoverWireError::FrameTooLong { len })
        } else {
            None
        };
        if let Some(e) = err {
            self.failed = Some(e);
            return Some(Err(e));
        }
        if rest.len() < len {
            return None;
        }
        let begin = self.start.saturating_add(FRAME_PREFIX_LEN);
        let end = begin.saturating_add(len);
        self.start = end;
        self.buf.get(begin..end).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![t, 0, 0, 1, 0, 0, 0, 2];
        m.extend_from_slice(body);
        let mut out = Vec::new();
        write_frame(&m, &mut out).unwrap();
        out
    }

    #[test]
    fn frames_split_anywhere() {
        let stream = [frame(35, &[]), frame(24, &[1, 2, 3]), frame(34, &[9; 20])].concat();
        for split in 0..=stream.len() {
            let mut f = Framer::new();
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                assert_eq!(f.push(part), part.len());
                while let Some(fr) = f.next_frame() {
                    got.push(fr.unwrap().to_vec());
                }
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[1][8..], [1, 2, 3]);
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn bad_lengths_are_sticky() {
        let mut f = Framer::new();
        assert_eq!(f.push(&[0, 7, 1, 2, 3, 4, 5, 6, 7]), 9);
        assert_eq!(
            f.next_frame(),
            Some(Err(FailoverWireError::FrameTooShort { len: 7 }))
        );
        assert_eq!(
            f.next_frame(),
            Some(Err(FailoverWireError::FrameTooShort { len: 7 }))
        );
        assert_eq!(f.push(&[1]), 0);
        assert!(f.error().is_some());

        let mut f = Framer::with_max_frame_len(100);
        assert_eq!(f.max_frame_len(), 100);
        f.push(&[0, 101]);
        assert_eq!(
            f.next_frame(),
            Some(Err(FailoverWireError::FrameTooLong { len: 101 }))
        );
        assert_eq!(Framer::with_max_frame_len(0).max_frame_len(), 8);
    }

    #[test]
    fn buffer_is_bounded() {
        let mut f = Framer::with_max_frame_len(10);
        let stream = [frame(35, &[1, 2]), frame(35, &[3, 4])].concat();
        // 12 bytes fit (2 + 10), the first frame is 12 bytes.
        let n = f.push(&stream);
        assert_eq!(n, 12);
        assert_eq!(f.next_frame().unwrap().unwrap()[8..], [1, 2]);
        assert!(f.next_frame().is_none());
        assert_eq!(f.push(&stream[n..]), 12);
        assert_eq!(f.next_frame().unwrap().unwrap()[8..], [3, 4]);
        assert!(f.next_frame().is_none());
        let mut out = vec![9];
        assert_eq!(
            write_frame(&vec![0; MAX_FRAME_LEN + 1], &mut out),
            Err(FailoverWireError::TooLong)
        );
        assert_eq!(out, [9]);
    }
}
