//! The audit log (`server.audit_log`): one JSON line per lease granted, renewed, released,
//! declined or reclaimed, with the client, the relay and the line identifiers, written by the
//! group committer once the change is durable. It answers "who held this prefix at that time"
//! after the lease records themselves have moved on. SIGHUP (a reload) reopens the file, so
//! logrotate can move it away (`postrotate: systemctl reload tandem`).
//!
//! Workers format the lines of the leases their replies change (only when the log is on: it
//! costs an allocation per lease); the committer writes them after the commit that made those
//! leases durable, and the lines of reclaimed leases itself.

use super::hex;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use tandem_core::lease::{Lease, LeaseState};
use tandem_core::wire::relay_data::RelayData;
use tandem_core::wire::{self, MessageType, opt};
use tracing::warn;

/// The open audit file.
pub struct AuditLog {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AuditLog {
    /// Opens (appends to) `path`.
    pub fn open(path: PathBuf) -> io::Result<AuditLog> {
        let f = open(&path)?;
        Ok(AuditLog {
            path,
            out: Mutex::new(BufWriter::new(f)),
        })
    }

    /// Writes lines (each ending in a newline) and flushes: called once per group commit.
    pub fn write(&self, lines: &[&str]) {
        if lines.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let r = lines
            .iter()
            .try_for_each(|l| out.write_all(l.as_bytes()))
            .and_then(|()| out.flush());
        if let Err(e) = r {
            warn!(path = %self.path.display(), error = %e, "audit log write failed");
        }
    }

    /// Reopens the file at its path (after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        let f = open(&self.path)?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.flush();
        *out = BufWriter::new(f);
        Ok(())
    }
}

/// What the relays said about the client's line: read from a received datagram, or from the
/// relay data a lease keeps (`wire::relay_data`). Empty when the client came directly.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// The address the Relay-forw came from (the relay closest to the server), if relayed.
    pub relay: Option<Ipv6Addr>,
    /// The link-address and peer-address of the relay closest to the client.
    pub link_address: Option<Ipv6Addr>,
    /// The client's address as that relay saw it.
    pub peer_address: Option<Ipv6Addr>,
    /// Interface-Id, Remote-Id and Subscriber-Id of the relay closest to the client, in hex.
    pub interface_id: Option<String>,
    /// Remote-Id (RFC 4649: enterprise number, then the id), hex.
    pub remote_id: Option<String>,
    /// Subscriber-Id (RFC 4580), hex.
    pub subscriber_id: Option<String>,
    /// Relay-Id (RFC 5460: the relay's DUID) of the relay closest to the client that sent
    /// one, hex.
    pub relay_id: Option<String>,
}

impl RelayInfo {
    /// Reads it from the datagram `bytes` received from `src`.
    pub fn of(bytes: &[u8], src: Ipv6Addr) -> RelayInfo {
        let Ok(relayed) = wire::unwrap_relays(bytes) else {
            return RelayInfo::default();
        };
        // Not bounded as a lease's copy is: the log names a long chain's line too.
        let mut data = Vec::new();
        wire::relay_data::encode_up_to(&relayed, src, &mut data, usize::MAX);
        RelayInfo::from_relay_data(&data)
    }

    /// Reads it from a lease's relay data (empty: not relayed).
    pub fn from_relay_data(bytes: &[u8]) -> RelayInfo {
        let Some(d) = RelayData::new(bytes) else {
            return RelayInfo::default();
        };
        let Some(c) = d.closest_to_client() else {
            return RelayInfo::default();
        };
        RelayInfo {
            relay: Some(d.relay_address()),
            link_address: Some(c.link_address),
            peer_address: Some(c.peer_address),
            interface_id: c.find(opt::INTERFACE_ID).map(hex),
            remote_id: d.remote_id().map(hex),
            subscriber_id: c.find(opt::SUBSCRIBER_ID).map(hex),
            relay_id: d.relay_ids().last().map(hex),
        }
    }

    /// The fields that are set, by name, as strings (what the audit log, `lease-get` and
    /// `tandem leases` show).
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        [
            ("relay", self.relay.map(|a| a.to_string())),
            ("link_address", self.link_address.map(|a| a.to_string())),
            ("peer_address", self.peer_address.map(|a| a.to_string())),
            ("interface_id", self.interface_id.clone()),
            ("remote_id", self.remote_id.clone()),
            ("subscriber_id", self.subscriber_id.clone()),
            ("relay_id", self.relay_id.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// The event a lease write stands for, as the audit log names it.
fn event(l: &Lease, via: Option<MessageType>) -> &'static str {
    match (l.state, via) {
        (LeaseState::Active, Some(MessageType::Renew | MessageType::Rebind)) => "renewed",
        (LeaseState::Active, _) => "granted",
        (LeaseState::Released, _) => "released",
        (LeaseState::Declined, _) => "declined",
        (LeaseState::Expired, _) => "expired",
        (LeaseState::Offered, _) => "offered",
    }
}

/// One audit line (JSON, newline-terminated) for lease `l` at `now` (unix secs), changed by a
/// client's `via` message (None: by the server, e.g. reclaimed) that came with `relay`.
pub fn line(l: &Lease, via: Option<MessageType>, relay: Option<&RelayInfo>, now: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{{\"time\":{now},\"event\":\"{}\",\"lease\":\"{}/{}\",\"duid\":\"{}\",\"iaid\":{},\"subnet\":{},\"valid_secs\":{},\"expires_at\":{}",
        event(l, via),
        l.addr,
        l.prefix_len,
        hex(&l.duid),
        l.iaid,
        l.subnet_id,
        l.valid_secs,
        l.expires_at
    );
    if let Some(v) = via {
        let _ = write!(s, ",\"via\":\"{v:?}\"");
    }
    if let Some(r) = relay {
        for (k, v) in r.fields() {
            let _ = write!(s, ",\"{k}\":\"{v}\"");
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::config::ResourceKind;

    #[test]
    fn a_line_is_one_json_object_with_the_relay_identifiers() {
        let l = Lease {
            kind: ResourceKind::Prefix,
            addr: "2001:db8:8000:100::".parse().unwrap(),
            prefix_len: 56,
            subnet_id: 1,
            state: LeaseState::Active,
            duid: vec![0, 3, 0, 1, 0xaa].into(),
            iaid: 7,
            preferred_secs: 1,
            valid_secs: 2,
            cltt: 3,
            expires_at: 4,
            seq: 5,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        };
        let r = RelayInfo {
            relay: Some("2001:db8::1".parse().unwrap()),
            remote_id: Some("0000000901".into()),
            ..Default::default()
        };
        let s = line(&l, Some(MessageType::Renew), Some(&r), 100);
        assert!(s.ends_with("}\n") && !s[..s.len() - 1].contains('\n'));
        assert!(s.contains("\"event\":\"renewed\""), "{s}");
        assert!(s.contains("\"lease\":\"2001:db8:8000:100::/56\""), "{s}");
        assert!(s.contains("\"remote_id\":\"0000000901\""), "{s}");
        assert!(s.contains("\"via\":\"Renew\""), "{s}");
        assert!(
            !s.contains("subscriber_id"),
            "absent fields are left out: {s}"
        );
    }
}
