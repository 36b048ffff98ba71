//! Builds the XDP program (`xdp/tandem_xdp.c`) with clang for the bpf target, when clang is
//! installed, and embeds it in the server (`--datapath xdp`). Without clang the server still
//! builds and serves on UDP; `--datapath xdp` then refuses to start and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where clang is looked for when `TANDEM_CLANG` is not set.
const CLANG_DEFAULT: &str = "clang";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tandem_xdp_built)");
    println!("cargo::rerun-if-env-changed=TANDEM_CLANG");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xdp/tandem_xdp.c");
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
        Ok(s) => println!(
            "cargo::warning=XDP program not built ({clang} {s}); is libbpf-dev installed? --datapath xdp will refuse to start"
        ),
        Err(e) => {
            // Rebuild once clang appears (a path that does not exist is always out of date).
            println!("cargo::rerun-if-changed=/usr/bin/{CLANG_DEFAULT}");
            println!(
                "cargo::warning=XDP program not built ({clang}: {e}); install clang and libbpf-dev for --datapath xdp"
            );
        }
    }
}
