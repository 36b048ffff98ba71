//! The XDP program (`xdp/tandem_xdp.c`, built by `build.rs`): loaded and attached with aya, one
//! instance per interface (its socket map is keyed by receive queue), with each queue's AF_XDP
//! socket registered in it.
//!
//! Attachment goes through a BPF link where the kernel has them (5.9+): the link dies with the
//! process, so neither a clean exit nor `kill -9` leaves the program attached. An interface
//! that already carries another XDP program is refused, never taken over.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;

/// How the program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum XdpAttachMode {
    /// Native (driver) mode where the driver supports it, generic mode otherwise.
    #[default]
    Auto,
    /// Native mode only: refuse to start on a driver without it.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

/// Why the XDP program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// This build has no XDP program (clang or libbpf-dev was missing when it was built).
    #[error(
        "this build of tandem has no XDP program (clang and libbpf-dev were not installed when it was built); install them and rebuild, or use --datapath udp"
    )]
    NotBuilt,
    /// The kernel refused to load the program.
    #[error("loading the XDP program: {0} (needs CAP_BPF and CAP_NET_ADMIN, or root)")]
    Load(String),
    /// The program could not be attached to an interface.
    #[error("attaching the XDP program to {interface}: {why}")]
    Attach {
        /// The interface.
        interface: String,
        /// Why.
        why: String,
    },
    /// A socket could not be registered in the program's map.
    #[error("registering the AF_XDP socket of {interface} queue {queue}: {why}")]
    Register {
        /// The interface.
        interface: String,
        /// The receive queue.
        queue: u32,
        /// Why.
        why: String,
    },
}

#[cfg(tandem_xdp_built)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("TANDEM_XDP_OBJECT")));
#[cfg(not(tandem_xdp_built))]
static OBJECT: Option<&[u8]> = None;

/// Whether this build carries the XDP program.
pub fn built() -> bool {
    OBJECT.is_some()
}

/// The program loaded and attached to one interface; dropping it detaches it.
pub struct XdpProgram {
    ebpf: aya::Ebpf,
    interface: String,
    /// The interface's index.
    pub ifindex: u32,
    /// The addresses in its map of this host's addresses.
    addresses: BTreeSet<[u8; 16]>,
    /// "native" or "generic": how it was attached.
    pub mode: &'static str,
}

const PROGRAM_NAME: &str = "tandem_xdp";
const SOCKETS_MAP: &str = "tandem_xsks";
const COUNTS_MAP: &str = "tandem_counts";
const ADDRS_MAP: &str = "tandem_addrs";
/// Entries of the program's address map (TANDEM_ADDRS_MAX in the C source).
pub const ADDRESSES_MAX: usize = 4096;
const PORT_GLOBAL: &str = "tandem_port";
const PORT_LAST_GLOBAL: &str = "tandem_port_last";
const FRAME_MAX_GLOBAL: &str = "tandem_frame_max";

impl XdpProgram {
    /// Loads the program for the UDP ports `ports` (the server's one port, or tandem-gen's
    /// range) and frames of at most `frame_max` bytes (what a socket's UMEM frame holds; longer
    /// ones go to the kernel) and attaches it to `interface`.
    pub fn attach(
        interface: &str,
        ports: std::ops::RangeInclusive<u16>,
        frame_max: u32,
        mode: XdpAttachMode,
    ) -> Result<Self, ProgramError> {
        let object = OBJECT.ok_or(ProgramError::NotBuilt)?;
        let mut ebpf = aya::EbpfLoader::new()
            .override_global(PORT_GLOBAL, ports.start(), true)
            .override_global(PORT_LAST_GLOBAL, ports.end(), true)
            .override_global(FRAME_MAX_GLOBAL, &frame_max, true)
            .load(object)
            .map_err(|e| ProgramError::Load(e.to_string()))?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| ProgramError::Load(format!("no program {PROGRAM_NAME} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| ProgramError::Load(e.to_string()))?;
        prog.load().map_err(|e| ProgramError::Load(chain(&e)))?;
        let attach = |prog: &mut aya::programs::Xdp, m: aya::programs::XdpMode| {
            prog.attach(interface, m).map_err(|e| {
                let why = chain(&e);
                let why = if why.contains("Device or resource busy") || why.contains("EBUSY") {
                    format!(
                        "{why}: another XDP program is attached to {interface} (`ip link set dev {interface} xdp off` removes it)"
                    )
                } else {
                    why
                };
                ProgramError::Attach {
                    interface: interface.to_string(),
                    why,
                }
            })
        };
        let mode = match mode {
            XdpAttachMode::Native => {
                attach(prog, aya::programs::XdpMode::Driver)?;
                "native"
            }
            XdpAttachMode::Generic => {
                attach(prog, aya::programs::XdpMode::Skb)?;
                "generic"
            }
            XdpAttachMode::Auto => match attach(prog, aya::programs::XdpMode::Driver) {
                Ok(_) => "native",
                Err(native) => {
                    tracing::info!(interface, error = %native, "native XDP refused; trying generic mode");
                    attach(prog, aya::programs::XdpMode::Skb)?;
                    "generic"
                }
            },
        };
        let ifindex = nix::net::if_::if_nametoindex(interface).unwrap_or(0);
        Ok(XdpProgram {
            ebpf,
            interface: interface.to_string(),
            ifindex,
            addresses: BTreeSet::new(),
            mode,
        })
    }

    /// [`XdpProgram::attach`] to `iface`, for frames up to what its sockets' UMEM frames hold,
    /// with the map of this host's addresses filled before any socket is registered (nothing
    /// is redirected until it is).
    pub fn attach_to(
        iface: &super::Interface,
        ports: std::ops::RangeInclusive<u16>,
        mode: XdpAttachMode,
    ) -> Result<Self, ProgramError> {
        let frame_max = super::frame_room(iface.mtu) as u32;
        let mut prog = XdpProgram::attach(&iface.name, ports, frame_max, mode)?;
        prog.sync_addresses(&local_addresses(&super::host_addresses(), iface.index))?;
        Ok(prog)
    }

    /// Whether its sockets should bind in zero-copy mode on a driver that advertises it
    /// (`driver_zero_copy`): only under a native program, since drivers may accept a
    /// zero-copy bind without one, then refuse to transmit (their wakeup needs the driver's
    /// own XDP path).
    pub fn zero_copy(&self, driver_zero_copy: bool) -> bool {
        driver_zero_copy && self.mode == "native"
    }

    /// Sends what arrives on receive queue `queue` to the AF_XDP socket `socket`.
    pub fn register(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), ProgramError> {
        let err = |why: String| ProgramError::Register {
            interface: self.interface.clone(),
            queue,
            why,
        };
        let map = self
            .ebpf
            .map_mut(SOCKETS_MAP)
            .ok_or_else(|| err(format!("no map {SOCKETS_MAP}")))?;
        let mut xsks = aya::maps::XskMap::try_from(map).map_err(|e| err(e.to_string()))?;
        xsks.set(queue, socket.as_raw_fd(), 0)
            .map_err(|e| err(e.to_string()))
    }

    /// Makes the program's map of this host's unicast addresses hold `now` (at most
    /// [`ADDRESSES_MAX`]; see [`local_addresses`]): datagrams to any other unicast address are
    /// passed to the kernel.
    /// Returns how many entries changed.
    pub fn sync_addresses(&mut self, now: &BTreeSet<[u8; 16]>) -> Result<usize, ProgramError> {
        if *now == self.addresses {
            return Ok(0);
        }
        let err = |why: String| ProgramError::Register {
            interface: self.interface.clone(),
            queue: 0,
            why: format!("address map: {why}"),
        };
        let map = self
            .ebpf
            .map_mut(ADDRS_MAP)
            .ok_or_else(|| err(format!("no map {ADDRS_MAP}")))?;
        let mut addrs: aya::maps::HashMap<_, [u8; 16], u8> =
            aya::maps::HashMap::try_from(map).map_err(|e| err(e.to_string()))?;
        let mut changed = 0;
        for gone in self.addresses.difference(now) {
            let _ = addrs.remove(gone);
            changed += 1;
        }
        self.addresses.retain(|a| now.contains(a));
        for new in now.iter() {
            if self.addresses.len() >= ADDRESSES_MAX {
                break;
            }
            if self.addresses.contains(new) {
                continue;
            }
            addrs.insert(new, 1, 0).map_err(|e| err(e.to_string()))?;
            self.addresses.insert(*new);
            changed += 1;
        }
        Ok(changed)
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Frames handed to a socket and frames passed to the kernel, summed over CPUs.
    pub fn counts(&self) -> (u64, u64) {
        let Some(map) = self.ebpf.map(COUNTS_MAP) else {
            return (0, 0);
        };
        let Ok(arr) = aya::maps::PerCpuArray::<_, u64>::try_from(map) else {
            return (0, 0);
        };
        let sum = |slot: u32| {
            arr.get(&slot, 0)
                .map(|v| v.iter().copied().sum::<u64>())
                .unwrap_or(0)
        };
        (sum(0), sum(1))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The unicast addresses the kernel would accept a datagram for on interface `ifindex`: every
/// global (and unique local) address of the host but loopback's (the weak host model delivers
/// to any of them on any interface), and the interface's own link-local ones; none that is
/// tentative (duplicate address detection running) or failed DAD. `host`: [`super::host_addresses`].
pub fn local_addresses(host: &[super::HostAddress], ifindex: u32) -> BTreeSet<[u8; 16]> {
    host.iter()
        .filter(|h| !h.loopback_interface && !h.addr.is_multicast() && !h.addr.is_loopback())
        // Link-local: only this interface's.
        .filter(|h| !h.addr.is_unicast_link_local() || h.ifindex == ifindex)
        .map(|h| h.addr.octets())
        .collect()
}
