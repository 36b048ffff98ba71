//! External tools the tests run, and whether a test that needs root and namespaces runs.

use std::io::Write as _;
use std::path::Path;

/// The full path of `name` on PATH or in the usual system directories (root's sbin
/// directories are often not on a user's PATH).
pub fn find_tool(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// `find_tool`, or the bare name (left to PATH, failing where it is run) when not found.
pub fn tool_or_name(name: &str) -> String {
    find_tool(name).unwrap_or_else(|| name.to_string())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `TANDEM_SKIP_NETNS=1` asks to skip the namespace tests.
pub fn skip_netns_requested() -> bool {
    std::env::var("TANDEM_SKIP_NETNS").as_deref() == Ok("1")
}

/// Prints `skipped: <test>: <why>` straight to the process's stderr, past libtest's output
/// capture, so the skip shows.
pub fn say_skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "skipped: {test}: {why}");
}

/// For a namespace test that needs only root (and iproute2): true when it is to be skipped
/// (`TANDEM_SKIP_NETNS=1`); otherwise panics unless running as root.
pub fn skip_netns(test: &str) -> bool {
    if skip_netns_requested() {
        say_skipped(test, "TANDEM_SKIP_NETNS=1");
        return true;
    }
    assert!(
        is_root(),
        "{test}: needs root for network namespaces (or TANDEM_SKIP_NETNS=1)"
    );
    false
}

/// Full paths of the external tools an interop test runs.
pub struct Tools {
    pub ip: String,
    pub timeout: String,
    pub sysctl: String,
    pub perfdhcp: String,
    pub dhclient: String,
}

/// The tools for an interop test (root, iproute2, perfdhcp, dhclient), or `None` when the test
/// is to be skipped. Panics with what is missing unless `TANDEM_SKIP_NETNS=1`.
pub fn prerequisites(test: &str) -> Option<Tools> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces and veth pairs need CAP_NET_ADMIN)".to_string());
    }
    let mut tool = |name: &str, package: &str| {
        find_tool(name).unwrap_or_else(|| {
            missing.push(format!("{name} (Debian package {package})"));
            String::new()
        })
    };
    let tools = Tools {
        ip: tool("ip", "iproute2"),
        timeout: tool("timeout", "coreutils"),
        sysctl: tool("sysctl", "procps"),
        perfdhcp: tool("perfdhcp", "kea-admin"),
        dhclient: tool("dhclient", "isc-dhcp-client"),
    };
    if skip_netns_requested() {
        let why = if missing.is_empty() {
            "TANDEM_SKIP_NETNS=1".to_string()
        } else {
            format!("TANDEM_SKIP_NETNS=1 and missing: {}", missing.join(", "))
        };
        say_skipped(test, &why);
        return None;
    }
    assert!(
        missing.is_empty(),
        "{test}: cannot run the interop tests, missing: {}. Run as root with perfdhcp (kea-admin) \
         and dhclient (isc-dhcp-client) installed (tools/test.sh installs them), or set \
         TANDEM_SKIP_NETNS=1 to skip these tests.",
        missing.join(", ")
    );
    Some(tools)
}
