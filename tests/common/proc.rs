//! Processes a test starts: run to completion under `timeout`, or spawned with their output in
//! a log file and stopped by their own PID (never by name), and `tandem serve` on top of that.
//! Also free loopback ports.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::checks::Checks;
use super::{TANDEM, unhex};

/// Output of a finished command, stdout and stderr together.
pub struct Ran {
    pub ok: bool,
    pub code: Option<i32>,
    pub out: String,
}

/// Runs a command under `timeout` (SIGTERM after `secs`, SIGKILL 2 s later).
pub fn run(timeout: &str, secs: u32, args: &[&str]) -> Ran {
    let out = Command::new(timeout)
        .args(["-k", "2", &secs.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ran {
        ok: out.status.success(),
        code: out.status.code(),
        out: text,
    }
}

/// Runs a command that must succeed.
pub fn must(timeout: &str, secs: u32, args: &[&str]) -> String {
    let r = run(timeout, secs, args);
    assert!(r.ok, "{args:?} failed (exit {:?}):\n{}", r.code, r.out);
    r.out
}

/// A process this test started; killed (SIGKILL, by its PID) and reaped when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `args[0] args[1..]` with stdout and stderr to `log`.
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        Proc::spawn_cmd(name, cmd, log)
    }

    /// Starts a prepared command with stdin closed and stdout and stderr to `log`.
    pub fn spawn_cmd(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let f =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let f2 = f.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `s` to this process (by its PID; it is ours and not yet reaped, so the PID is not
    /// reused).
    pub fn signal(&self, s: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), s);
    }

    /// Exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap (a stopped process is continued first, so nothing is left stopped).
    pub fn kill9(&mut self) {
        if self.exited().is_none() {
            self.signal(Signal::SIGCONT);
            let _ = self.child.kill();
            // A process under libfaketime (the clock-skew tests) keeps its clock in
            // /dev/shm files named by its PID, and removes them at exit, not when killed.
            // Still unreaped, the PID is ours: nobody else's files can have that name.
            let pid = self.pid();
            for f in [
                format!("/dev/shm/faketime_shm_{pid}"),
                format!("/dev/shm/sem.faketime_sem_{pid}"),
            ] {
                let _ = std::fs::remove_file(f);
            }
        }
        let _ = self.child.wait();
    }

    /// Waits up to `d` for the process to exit on its own.
    pub fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + d;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of a text.
pub fn tail_str(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a file.
pub fn tail(p: &Path, n: usize) -> String {
    tail_str(&read_lossy(p), n)
}

/// A `tandem serve` this test started, with its log file; killed by PID when dropped.
pub struct Server {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Server {
    /// Starts `tandem serve` from a prepared command (e.g. `ip netns exec <ns> tandem serve
    /// ...`, which execs the server, so the PID is the server's) without waiting for it.
    pub fn spawn(cmd: Command, log: &Path) -> Server {
        Server {
            proc: Proc::spawn_cmd("tandem serve", cmd, log),
            log: log.to_path_buf(),
        }
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn signal(&self, s: Signal) {
        self.proc.signal(s);
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// The server must still be running at the end of a test (no crash, no early exit).
    pub fn check_alive(&mut self, ck: &mut Checks) {
        let st = self.proc.exited();
        ck.check(st.is_none(), || {
            format!(
                "the server exited during the test ({st:?}); log:\n{}",
                tail(&self.log, 30)
            )
        });
    }
}

/// Waits up to `within` for a line containing `needle` in `log`, which `proc` writes. Fails
/// with the log's tail if the process exits first or the time runs out.
pub fn wait_log_line(proc: &mut Proc, log: &Path, needle: &str, within: Duration, what: &str) {
    let end = Instant::now() + within;
    loop {
        if read_lossy(log).contains(needle) {
            return;
        }
        if let Some(st) = proc.exited() {
            panic!(
                "{what} exited ({st}) before logging `{needle}`; log:\n{}",
                tail(log, 40)
            );
        }
        assert!(
            Instant::now() < end,
            "{what}: no `{needle}` in its log after {within:?}; log:\n{}",
            tail(log, 40)
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Starts `prefix... tandem serve --config config extra...` and waits until it serves.
pub fn start_server(prefix: &[String], config: &Path, extra: &[&str], log: &Path) -> Server {
    let mut args: Vec<String> = prefix.to_vec();
    args.extend([TANDEM, "serve", "--config"].map(String::from));
    args.push(config.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Server {
        proc: spawn_serving(&args, log),
        log: log.to_path_buf(),
    }
}

/// Spawns `args` (a `tandem serve` command line, maybe behind a prefix) with its output in
/// `log` and waits until it logs that it serves.
fn spawn_serving(args: &[String], log: &Path) -> Proc {
    let mut proc = Proc::spawn("tandem serve", args, log);
    wait_log_line(
        &mut proc,
        log,
        "serving; stop with",
        Duration::from_secs(15),
        &format!("tandem serve {args:?}"),
    );
    proc
}

/// With `--datapath xdp`: the frames the XDP program handed to the server's sockets, from the
/// line a clean stop logs (`XDP program detached ... redirected=N`).
pub fn xdp_redirected(log: &str) -> Option<u64> {
    log.lines()
        .find(|l| l.contains("XDP program detached"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("redirected="))?
        .parse()
        .ok()
}

/// Checks that the XDP program(s) of the server whose log is `log` handed at least `want`
/// frames to its sockets; `whose` names them in the failure ("the primary's program").
pub fn check_redirected(ck: &mut Checks, log: &str, whose: &str, want: u64) {
    let n = xdp_redirected(log);
    ck.check(n.is_some_and(|n| n >= want), || {
        format!("{whose} handed {n:?} frames to the sockets, want {want} or more")
    });
}

/// The server DUID the log reports at `store open`.
pub fn server_duid(log: &Path) -> Vec<u8> {
    let text = read_lossy(log);
    let hex = text
        .lines()
        .find(|l| l.contains("store open"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("duid=")))
        .unwrap_or_else(|| panic!("no `store open ... duid=` line in the server log:\n{text}"));
    unhex(hex).unwrap_or_else(|| panic!("bad duid `{hex}` in server log"))
}

/// A UDP port on ::1 that was free a moment ago (bound to port 0 and released). Another
/// process may take it before the test binds it again; to keep a port, use `HeldUdpPort`.
pub fn free_udp_port() -> u16 {
    HeldUdpPort::new().port
}

/// A UDP port on ::1 kept bound (without SO_REUSEPORT, so nobody else can bind it, not even
/// a `tandem` whose sockets use SO_REUSEPORT) until dropped.
pub struct HeldUdpPort {
    pub sock: UdpSocket,
    pub port: u16,
}

impl HeldUdpPort {
    pub fn new() -> HeldUdpPort {
        let sock = UdpSocket::bind("[::1]:0").expect("bind [::1]:0");
        let port = sock.local_addr().expect("local addr").port();
        HeldUdpPort { sock, port }
    }
}

/// Starts `tandem serve args...` with its output in `log` and waits until it serves.
pub fn serve(args: &[&str], log: &Path) -> Proc {
    let mut all = vec![super::TANDEM.to_string(), "serve".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    spawn_serving(&all, log)
}

/// A standalone server on a free port of ::1, its store and log (`server.log`) in `dir`,
/// Rapid Commit on, configured by `body` (subnets and the rest, after `[server]`): writes
/// `dir/tandem.toml`, starts it and returns it, its log and its address.
pub fn serve_config(dir: &Path, body: &str) -> (Proc, std::path::PathBuf, String) {
    let log = dir.join("server.log");
    let listen = format!("[::1]:{}", free_udp_port());
    let cfg = dir.join("tandem.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{listen}\"]\ndata_dir = \"{}\"\nrapid_commit = true\n{body}",
            dir.join("data").display()
        ),
    )
    .expect("write tandem.toml");
    let server = serve(&["--config", cfg.to_str().unwrap(), "--no-sync"], &log);
    (server, log, listen)
}
