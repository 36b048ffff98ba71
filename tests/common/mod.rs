//! The harness the integration tests share: network namespaces (`netns`), processes the tests
//! start and stop by PID (`proc`), the test CA and certificates (`pki`), finding external tools
//! and deciding whether a namespace test runs (`tools`), the lease store and its pools
//! (`leases`) and collected assertions (`checks`).
//!
//! Each test file includes it with `mod common;`, so each uses only part of it.
#![allow(dead_code)]

pub mod checks;
pub mod leases;
pub mod netns;
pub mod pki;
pub mod proc;
pub mod tools;

/// The `tandem` binary of this build.
pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
/// The `tandem-gen` binary of this build.
pub const GEN: &str = env!("CARGO_BIN_EXE_tandem-gen");

/// Plain lowercase hex, as `tandem leases` prints DUIDs.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Colon-separated hex as perfdhcp and dhclient print DUIDs (`0:1:0:1:32:99:da:ca` or
/// `00:01:...`) to the plain lowercase hex `tandem leases` prints.
pub fn colon_hex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    bytes.filter(|b| !b.is_empty()).map(|b| hex(&b))
}
