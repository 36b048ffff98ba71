#!/usr/bin/env bash
# Runs Tandem's whole test suite. Installs what the tests need first, idempotently:
# perfdhcp (Debian kea-admin), dhclient (isc-dhcp-client), iproute2, tshark, clang and
# libbpf-dev (the XDP program), ethtool and ping (the AF_XDP tests), and Prometheus
# Python client (its exposition-format parser). The interop tests
# create network namespaces, so the suite runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v perfdhcp >/dev/null 2>&1 || [ -x /usr/sbin/perfdhcp ] || need+=(kea-admin)
command -v dhclient >/dev/null 2>&1 || [ -x /usr/sbin/dhclient ] || need+=(isc-dhcp-client)
# kea-dhcp6 writes the leases6.csv that tests/import_kea.rs imports.
command -v kea-dhcp6 >/dev/null 2>&1 || [ -x /usr/sbin/kea-dhcp6 ] || need+=(kea-dhcp6-server)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /usr/bin/ip ] || need+=(iproute2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(faketime)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
# tshark (with text2pcap): Wireshark's dissector reads our replies in tests/interop_tshark.rs.
command -v tshark >/dev/null 2>&1 && command -v text2pcap >/dev/null 2>&1 || need+=(tshark)
# systemd-analyze checks the shipped unit in tests/systemd.rs.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Prometheus' own Python parser reads our /metrics in tests/metrics.rs.
/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1 || need+=(python3-prometheus-client)
# The XDP program is built by cargo (src/server/build.rs) with clang and libbpf's headers; the
# AF_XDP tests turn off checksum offload on a veth (ethtool) and ping across it.
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v ethtool >/dev/null 2>&1 || [ -x /usr/sbin/ethtool ] || need+=(ethtool)
command -v ping >/dev/null 2>&1 || [ -x /usr/bin/ping ] || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: needs root to install ${need[*]} and to create network namespaces" >&2
    exit 1
  fi
  echo "tools/test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# promtool (Prometheus' rule checker and metrics linter) checks docs/examples/alerts.yml, the
# Grafana dashboard's queries and our /metrics in tests/metrics.rs. Debian ships it only inside
# the `prometheus` package, whose installation would start a Prometheus server, so the tool is
# taken out of the package file instead (into target/tools, once).
PROMTOOL="$PWD/target/tools/promtool"
if [ ! -x "$PROMTOOL" ]; then
  echo "tools/test.sh: extracting promtool from Debian's prometheus package into target/tools"
  tmp="$(mktemp -d)"
  ( cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } &&
    dpkg-deb -x prometheus_*.deb x ) || { echo "tools/test.sh: cannot get promtool" >&2; rm -rf "$tmp"; exit 1; }
  mkdir -p target/tools && cp "$tmp/x/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
fi
export TANDEM_PROMTOOL="$PROMTOOL"

# Network namespaces: each interop test deletes leftovers of its own names before it creates
# them and always deletes what it made; nothing here touches namespaces other processes own
# (a benchmark may be running beside the tests).

cargo test --locked --workspace --all-targets "$@"

# The deterministic failover simulator over many seeds (release build: ~30 s for 10,000).
# A failing seed prints itself and replays with: cargo run --release --bin tandem-sim -- --seed N --trace
cargo run --locked --release --quiet --bin tandem-sim -- --seeds "${TANDEM_SIM_SEEDS:-10000}" --max-secs 300
# The same with records of ended leases forgotten 60 s after they ended (server.keep_ended_secs;
# the seeds above keep them, so that each replays as it was found).
cargo run --locked --release --quiet --bin tandem-sim -- --seeds "${TANDEM_SIM_FORGET_SEEDS:-3000}" --first 300000 --keep-ended-secs 60 --max-secs 300
