//! The harness the integration tests share: network namespaces (`netns`), processes the tests
//! start and stop by PID (`proc`), the test CA and certificates (`pki`), finding external tools
//! and deciding whether a namespace test runs (`tools`), the lease store and its pools
//! (`leases`), perfdhcp runs and their checks (`perfdhcp`), collected assertions (`checks`), scraping `/metrics` (`prom`), and a lock for tests that must not overlap
//! (`one_at_a_time`).
//!
//! Each test file includes it with `mod common;`, so each uses only part of it.
#![allow(dead_code)]

pub mod checks;
pub mod leases;
pub mod netns;
pub mod perfdhcp;
pub mod pki;
pub mod proc;
pub mod prom;
pub mod tools;

/// The `tandem` binary of this build.
pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
/// The `tandem-gen` binary of this build.
pub const GEN: &str = env!("CARGO_BIN_EXE_tandem-gen");

/// Held by a test that must not run beside another test of its file that holds it (timing
/// measurements, heavy load on a small machine): libtest runs a file's tests on parallel
/// threads of one process, and this lock makes those tests take turns. A test that failed
/// while holding it poisons it; the next one takes it all the same.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Runs tandem-gen (bounded by `timeout` at `secs`) with `--json` and `args`; returns its JSON
/// report, or panics with what it printed.
pub fn gen_json(args: &[&str], secs: u32) -> serde_json::Value {
    let out = std::process::Command::new("timeout")
        .args(["-k", "2", &secs.to_string(), GEN, "--json"])
        .args(args)
        .output()
        .expect("run tandem-gen");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tandem-gen {args:?} printed no JSON report ({e}), exit {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
