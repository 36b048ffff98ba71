//! Scraping `/metrics` and reading it with Prometheus' own parser (Python's
//! `prometheus_client`, Debian package python3-prometheus-client, installed by tools/test.sh),
//! so the format is checked by code that is not ours.

use std::collections::BTreeMap;
use std::process::Command;

/// Debian's interpreter, where python3-prometheus-client installs (a `python3` earlier on PATH
/// may be another one without it).
pub const PYTHON: &str = "/usr/bin/python3";

/// Fetches the URL, checks the Content-Type, parses with `text_string_to_metric_families` and
/// prints one JSON line `[name, labels, value]` per sample (`+Inf` as a string).
const SCRIPT: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    ctype = r.headers.get("Content-Type", "")
    if not ctype.startswith("text/plain; version=0.0.4"):
        sys.exit("unexpected Content-Type: " + ctype)
    text = r.read().decode("utf-8")
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        v = s.value
        print(json.dumps([s.name, s.labels, v if v == v and abs(v) != float("inf") else str(v)]))
"#;

/// One scrape: every sample with its labels.
pub struct Scrape {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Scrapes `url`, running the parser under `prefix` (e.g. `ip netns exec <ns>`).
    pub fn get(prefix: &[String], url: &str) -> Scrape {
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(PYTHON);
                c
            }
            None => Command::new(PYTHON),
        };
        let out = cmd
            .args(["-c", SCRIPT, url])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e} (tools/test.sh installs it)"));
        assert!(
            out.status.success(),
            "scraping {url} with prometheus_client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("parser output is JSON");
                let labels = v[1]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = v[2].as_f64().unwrap_or(f64::INFINITY);
                (v[0].as_str().expect("name").to_string(), labels, value)
            })
            .collect();
        Scrape { samples }
    }

    /// Sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.2).sum()
    }

    /// The one sample named `name` with `labels`; panics if there is none or several.
    pub fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let m: Vec<_> = self.matching(name, labels).collect();
        assert!(
            m.len() == 1,
            "{} samples of {name} with {labels:?} (want 1): {m:?}",
            m.len()
        );
        m[0].2
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.0 == name)
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a (String, BTreeMap<String, String>, f64)> + 'a {
        self.samples.iter().filter(move |s| {
            s.0 == name
                && labels
                    .iter()
                    .all(|(k, v)| s.1.get(*k).is_some_and(|x| x == v))
        })
    }
}

/// Prometheus' `promtool`: `TANDEM_PROMTOOL` (tools/test.sh sets it), else the copy tools/test.sh
/// extracts into target/tools.
pub fn promtool() -> String {
    let p = std::env::var("TANDEM_PROMTOOL")
        .unwrap_or_else(|_| format!("{}/target/tools/promtool", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&p).is_file(),
        "promtool not found at {p}: run the suite with tools/test.sh, which extracts it"
    );
    p
}

/// Runs promtool with `args` and `stdin`; panics with its output unless it succeeds.
pub fn promtool_ok(args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The body of `GET url` (plain HTTP/1.0, for `http://host:port/path` URLs).
pub fn http_get(url: &str) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut c = std::net::TcpStream::connect(host).expect("connect to the metrics listener");
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (head.to_string(), body.to_string())
}

/// Every `tandem_…` metric name a text (a dashboard, alert rules) mentions.
pub fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tandem_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The dashboard and the alert rules shipped in docs/examples.
pub fn shipped_examples() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");
    ["grafana-dashboard.json", "alerts.yml"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{dir}/{f}")).expect("read docs/examples"))
        .collect::<Vec<_>>()
        .join("\n")
}
