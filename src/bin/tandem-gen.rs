//! `tandem-gen`: the DHCPv6 load generator (see `tandem-gen --help`; the code is in `tools/tandem-gen`).

fn main() -> std::process::ExitCode {
    tandem_gen::cli::main()
}
