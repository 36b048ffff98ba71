//! `tandem-sim`: the deterministic failover simulator (see `tandem-sim --help`; the code is in
//! `tools/tandem-sim`).

fn main() -> std::process::ExitCode {
    tandem_sim::cli::main()
}
