//! `tandem`: the DHCPv6 server (see `tandem --help`; the code is in `tandem-server`).

fn main() -> std::process::ExitCode {
    tandem_server::cli::main()
}
