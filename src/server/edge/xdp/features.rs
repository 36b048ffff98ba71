//! What an interface's driver does to VLAN tags before the XDP program sees a frame, read
//! with the ethtool ioctls (driver name, and the active features by name).
//!
//! A NIC with rx-vlan-offload (`rx-vlan-hw-parse`) or `rx-vlan-stag-hw-parse` on takes the tag
//! off in hardware and keeps it in the receive descriptor: native XDP (and generic XDP, which
//! runs on the skb) then sees a tagged client's frame as untagged, and the server would answer
//! it as the interface's own link. The program cannot read the stripped tag through aya 0.14
//! (no device-bound programs, no kfuncs), so such an interface is refused until the offload is
//! off, and then tagged frames carry their tag and go to the kernel.
//!
//! veth is the exception: it always reports the offload on, but its tags travel in the skb
//! from the peer's transmit side, whatever this end says; only the peer's tx-vlan-offload
//! decides, and that end may be in another namespace. See [`vlan_refusal`].

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// Most feature names read (the kernel has about 70).
const FEATURES_MAX: usize = 256;

/// The features that strip VLAN tags on receive, as ethtool's feature strings name them
/// (`ethtool -k` shows the first as rx-vlan-offload).
pub const VLAN_STRIPPING: [&str; 2] = ["rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"];

/// What [`vlan_stripping`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanStripping {
    /// The driver's name (`ethtool -i`).
    pub driver: String,
    /// Which of [`VLAN_STRIPPING`] are active.
    pub active: Vec<&'static str>,
    /// Which of those the driver does not let be turned off.
    pub fixed: Vec<&'static str>,
}

/// The `ethtool -K` words that turn feature `name` off.
fn off_words(name: &str) -> &'static str {
    match name {
        "rx-vlan-hw-parse" => "rxvlan off",
        _ => "rx-vlan-stag-hw-parse off",
    }
}

/// `struct ifreq` with `ifr_data`, as SIOCETHTOOL takes it.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Runs one ethtool command on `name`, with `buf` as its argument (its first four bytes hold
/// the command, written by the caller).
fn ethtool(sock: &UdpSocket, name: &str, buf: &mut [u8]) -> io::Result<()> {
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!("interface name {name} too long")));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `req` is a live ifreq whose data pointer addresses `buf`, which is as large as
    // the command written in it makes the kernel read and write (the callers size it from the
    // counts the kernel gave); both outlive the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The driver of interface `name` and which VLAN-stripping features are active on it.
pub fn vlan_stripping(name: &str) -> io::Result<VlanStripping> {
    let sock = UdpSocket::bind("[::]:0").or_else(|_| UdpSocket::bind("0.0.0.0:0"))?;
    // Driver name: struct ethtool_drvinfo, the driver at bytes 4..36.
    let mut drv = [0u8; 196];
    drv[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    ethtool(&sock, name, &mut drv)?;
    let driver = String::from_utf8_lossy(&drv[4..36])
        .trim_end_matches('\0')
        .to_string();
    // How many features: struct ethtool_sset_info with the features set's bit in its mask.
    let mut info = [0u8; 20];
    info[..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ethtool(&sock, name, &mut info)?;
    let mask = u64::from_ne_bytes(info[8..16].try_into().unwrap_or_default());
    if mask & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::other("the driver lists no feature names"));
    }
    // GSTRINGS writes as many names as the kernel has, whatever it is asked for: a count past
    // what the buffer below is sized for is refused, never clamped.
    let count = u32_at(&info, 16) as usize;
    if count > FEATURES_MAX {
        return Err(io::Error::other(format!(
            "the kernel lists {count} features, more than the {FEATURES_MAX} read"
        )));
    }
    // Their names: struct ethtool_gstrings, ETH_GSTRING_LEN bytes each.
    let mut names = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    names[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    names[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    names[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ethtool(&sock, name, &mut names)?;
    // Their state: struct ethtool_gfeatures, a block of four words per 32 features.
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u8; 8 + blocks * 16];
    feats[..4].copy_from_slice(&ETHTOOL_GFEATURES.to_ne_bytes());
    feats[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    ethtool(&sock, name, &mut feats)?;
    let mut active = Vec::new();
    let mut fixed = Vec::new();
    for i in 0..count {
        let n = &names[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
        let n = String::from_utf8_lossy(n);
        let n = n.trim_end_matches('\0');
        let Some(&known) = VLAN_STRIPPING.iter().find(|k| **k == n) else {
            continue;
        };
        // The block's words: available (changeable), requested, active, never_changed.
        let block = 8 + (i / 32) * 16;
        let bit = 1 << (i % 32);
        if u32_at(&feats, block + 8) & bit != 0 {
            active.push(known);
            if u32_at(&feats, block) & bit == 0 || u32_at(&feats, block + 12) & bit != 0 {
                fixed.push(known);
            }
        }
    }
    Ok(VlanStripping {
        driver,
        active,
        fixed,
    })
}

/// Why the AF_XDP datapath must not run on interface `name` with `found`, if it must not:
/// a driver that strips VLAN tags before XDP would make tagged clients look like the link's
/// own. veth is let through (see the module documentation).
pub fn vlan_refusal(name: &str, found: &VlanStripping) -> Option<String> {
    if found.active.is_empty() || found.driver == "veth" {
        return None;
    }
    let what = format!(
        "{name} ({}) strips VLAN tags in hardware ({} on): a tagged client's frames would reach \
         the XDP program untagged and be answered as {name}'s own",
        found.driver,
        found.active.join(", ")
    );
    if !found.fixed.is_empty() {
        return Some(format!(
            "{what}; the driver does not let {} be turned off: use --datapath udp",
            found.fixed.join(", ")
        ));
    }
    let words: Vec<&str> = found.active.iter().map(|f| off_words(f)).collect();
    Some(format!(
        "{what}; turn it off with `ethtool -K {name} {}` (tagged frames then go to the \
         kernel), or use --datapath udp",
        words.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(driver: &str, active: &[&'static str]) -> VlanStripping {
        VlanStripping {
            driver: driver.into(),
            active: active.to_vec(),
            fixed: Vec::new(),
        }
    }

    #[test]
    fn a_nic_that_strips_tags_is_refused_with_the_command_that_stops_it() {
        let why = vlan_refusal("eth1", &found("ice", &["rx-vlan-hw-parse"])).expect("refused");
        assert!(why.contains("ethtool -K eth1 rxvlan off"), "{why}");
        assert!(why.contains("ice"), "{why}");
        assert!(!why.contains("stag"), "only what is on is named: {why}");
        let both = vlan_refusal("eth1", &found("ice", &VLAN_STRIPPING)).expect("refused");
        assert!(
            both.contains("ethtool -K eth1 rxvlan off rx-vlan-stag-hw-parse off"),
            "{both}"
        );
        let stuck = VlanStripping {
            fixed: vec!["rx-vlan-hw-parse"],
            ..found("odd", &["rx-vlan-hw-parse"])
        };
        let why = vlan_refusal("eth1", &stuck).expect("refused");
        assert!(
            why.contains("--datapath udp") && !why.contains("ethtool -K"),
            "{why}"
        );
        assert_eq!(vlan_refusal("eth1", &found("ice", &[])), None);
        assert_eq!(
            vlan_refusal("v0", &found("veth", &VLAN_STRIPPING)),
            None,
            "veth's own flag says nothing of its tags"
        );
    }
}
