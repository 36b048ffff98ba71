//! Reservations by subscriber line on a real `tandem serve` (issue 9): tandem-gen acts as an
//! access relay that adds a Remote-ID per line; each line has a /56 reserved in a reservations
//! file. A second run with new CPEs (new DUIDs, same lines) gets the same prefixes back, and
//! `tandem ctl lease-get --remote-id` names the new CPE as the line's holder.

mod common;

use common::proc::{serve_config, tail};
use common::{GEN, TANDEM};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// tandem-gen as the access relay for `clients` lines, one CPE each, with `seed` telling the
/// CPEs' DUIDs apart; returns lease -> DUID of what it was granted.
fn cpes(server: &str, clients: u32, seed: u32, held: &Path) -> BTreeMap<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "2", "30", GEN, "--server", server])
        .args(["--relay-link", "2001:db8:1::", "--line-remote-ids"])
        .args([
            "--clients",
            &clients.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(["--mode", "pd", "--rapid-commit", "--leases-out"])
        .arg(held)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::read_to_string(held)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn a_swapped_cpe_gets_its_line_s_prefix_back() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    // Lines 0..3 each have a /56; the pool around them serves anything else.
    let lines: Vec<(String, String)> = (0..3)
        .map(|n| {
            (
                format!("line-{n}"),
                format!("2001:db8:8000:{:x}00::/56", 0x17 + n),
            )
        })
        .collect();
    let file: String = lines
        .iter()
        .map(|(line, p)| format!("remote-id  9:text:{line}  {p}\n"))
        .collect();
    std::fs::write(d.path().join("lines.txt"), file).unwrap();
    let (mut server, log, addr) = serve_config(
        d.path(),
        r#"[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pd_pools = [{ prefix = "2001:db8:8000::/40", delegated_len = 56 }]
reservations_file = "lines.txt"
"#,
    );
    let first = cpes(&addr, 3, 1, &d.path().join("first.tsv"));
    let second = cpes(&addr, 3, 2, &d.path().join("second.tsv"));
    let reserved: Vec<&String> = lines.iter().map(|(_, p)| p).collect();
    for (run, held) in [("first", &first), ("second", &second)] {
        let mut got: Vec<&String> = held.keys().collect();
        got.sort();
        assert_eq!(
            got,
            reserved,
            "{run} CPEs: each line's prefix\n{}",
            tail(&log, 20)
        );
    }
    for p in &reserved {
        assert_ne!(first[*p], second[*p], "a new CPE (DUID) on the line of {p}");
    }
    // The line's holder is the new CPE.
    let out = Command::new(TANDEM)
        .args(["ctl", "--data-dir"])
        .arg(&data)
        .args(["lease-get", "--remote-id", "00000009:6c696e652d30"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let active: Vec<&serde_json::Value> = v["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{v}");
    assert_eq!(active[0]["lease"], reserved[0].as_str(), "{v}");
    assert_eq!(active[0]["duid"], second[reserved[0]].as_str(), "{v}");
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}
