//! Builds the XDP program (`xdp/tandem_xdp.c`) with clang for the bpf target, when clang is
//! installed, and embeds it in the server (`--datapath xdp`). Without clang the server still
//! builds and serves on UDP; `--datapath xdp` then refuses to start and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where clang is looked for when `TANDEM_CLANG` is not set.
const CLANG_DEFAULT: &str = "clang";
/// Folders whose change may let a failed build of the program succeed: where libbpf-dev puts the
/// headers the program includes, and where clang's command appears. Folders, not files: a
/// package's files keep the package's old mtimes, so cargo would take a newly installed file for
/// an unchanged one, while a folder's mtime is the time an entry was added.
const TOOL_DIRS: [&str; 2] = ["/usr/include/bpf", "/usr/bin"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tandem_xdp_built)");
    println!("cargo::rerun-if-env-changed=TANDEM_CLANG");
    // Read when the script runs, not when it is compiled: cargo reuses a compiled build script
    // for a checkout at another path (a worktree sharing the target folder), whose
    // compile-time path may no longer exist.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let source = Path::new(&manifest_dir).join("../../xdp/tandem_xdp.c");
    println!("cargo::rerun-if-changed={}", source.display());
    let clang = std::env::var("TANDEM_CLANG").unwrap_or_else(|_| CLANG_DEFAULT.to_string());
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("tandem_xdp.o");
    // Multiarch headers (asm/types.h) live under the host triple's include folder on Debian.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo::rustc-cfg=tandem_xdp_built");
            println!("cargo::rustc-env=TANDEM_XDP_OBJECT={}", out.display());
        }
        // clang's own messages went to the build output above.
        Ok(s) => {
            rerun_when_tools_change();
            println!(
                "cargo::warning=XDP program not built ({clang} {s}); is libbpf-dev installed? --datapath xdp will refuse to start"
            )
        }
        Err(e) => {
            rerun_when_tools_change();
            println!(
                "cargo::warning=XDP program not built ({clang}: {e}); install clang and libbpf-dev for --datapath xdp"
            );
        }
    }
}

/// Asks cargo to run this script again once clang or libbpf-dev may have been installed.
fn rerun_when_tools_change() {
    for dir in TOOL_DIRS {
        // A path that does not exist is always out of date.
        println!("cargo::rerun-if-changed={dir}");
    }
}
