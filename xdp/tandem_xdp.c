// Tandem's XDP program: hands DHCPv6 messages for the server (UDP to the server port, 547 unless
// configured otherwise; or, under tandem-gen, the replies to its ports) to the AF_XDP socket of
// the queue they arrived on, and passes everything else to the kernel untouched (the partner link, neighbour discovery, SSH, fragments,
// VLAN-tagged frames, transit traffic).
//
// Built by src/server/build.rs with `clang -O2 -target bpf`; loaded and attached by
// src/server/edge/xdp/program.rs (aya). Checked in as source only.
//
// SPDX-License-Identifier: MIT OR Apache-2.0

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// One AF_XDP socket per receive queue, keyed by the queue's index.
#define TANDEM_QUEUES_MAX 256
// How many IPv6 extension headers are skipped before the program gives up and passes.
#define EXT_HEADERS_MAX 4

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, TANDEM_QUEUES_MAX);
    __type(key, __u32);
    __type(value, __u32);
} tandem_xsks SEC(".maps");

// The host's unicast addresses, kept by the server (the kernel's UDP path would only deliver to
// these): a datagram for any other address is transit traffic (this host routing a relay's
// messages to another server) and goes to the kernel untouched.
#define TANDEM_ADDRS_MAX 4096
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, TANDEM_ADDRS_MAX);
    __type(key, struct in6_addr);
    __type(value, __u8);
} tandem_addrs SEC(".maps");

// Per-CPU counters: [0] redirected to a socket, [1] passed to the kernel.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} tandem_counts SEC(".maps");

// The UDP ports taken, set by the loader before the program is loaded: the server's port (547
// unless configured otherwise) as first and last; tandem-gen --datapath xdp gives the range of
// its sending threads' ports.
volatile const __u16 tandem_port = 547;
volatile const __u16 tandem_port_last = 547;
// The longest frame an AF_XDP socket can take (its UMEM frame less the kernel's headroom), set
// by the loader: a longer one (a jumbo frame) goes to the kernel rather than being dropped.
volatile const __u32 tandem_frame_max = 1792;

static __always_inline int count(__u32 slot, int verdict)
{
    __u64 *n = bpf_map_lookup_elem(&tandem_counts, &slot);
    if (n)
        *n += 1;
    return verdict;
}

static __always_inline int pass(void)
{
    return count(1, XDP_PASS);
}

SEC("xdp")
int tandem_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return pass();
    __u16 proto = eth->h_proto;
    void *cursor = eth + 1;

    // VLAN-tagged frames belong to the VLAN's own interface (and its addresses and subnets):
    // the kernel takes them there. The server refuses an interface that has VLAN or other
    // upper devices, whose traffic could reach us untagged when the NIC strips tags.
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
        return pass();
    if (proto != bpf_htons(ETH_P_IPV6))
        return pass();

    struct ipv6hdr *ip6 = cursor;
    if ((void *)(ip6 + 1) > data_end)
        return pass();
    __u8 next = ip6->nexthdr;
    cursor = ip6 + 1;

    // Multicast: only All_DHCP_Relay_Agents_and_Servers (ff02::1:2) and All_DHCP_Servers
    // (ff05::1:3). Unicast: only to one of this host's addresses.
    struct in6_addr dst = ip6->daddr;
    __u32 w0 = bpf_ntohl(dst.in6_u.u6_addr32[0]);
    if ((w0 >> 24) == 0xff) {
        int dhcp = dst.in6_u.u6_addr32[1] == 0 && dst.in6_u.u6_addr32[2] == 0 &&
                   ((w0 == 0xff020000 && dst.in6_u.u6_addr32[3] == bpf_htonl(0x00010002)) ||
                    (w0 == 0xff050000 && dst.in6_u.u6_addr32[3] == bpf_htonl(0x00010003)));
        if (!dhcp)
            return pass();
    } else if (!bpf_map_lookup_elem(&tandem_addrs, &dst)) {
        return pass();
    }

#pragma unroll
    for (int i = 0; i < EXT_HEADERS_MAX; i++) {
        // Hop-by-hop options, routing, destination options: skip. A fragment (44) is left to
        // the kernel, which reassembles it for the UDP socket path.
        if (next != 0 && next != 43 && next != 60)
            break;
        __u8 *ext = cursor;
        if ((void *)(ext + 4) > data_end)
            return pass();
        // A routing header with segments left is on its way elsewhere: the kernel routes it.
        if (next == 43 && ext[3] != 0)
            return pass();
        next = ext[0];
        cursor = ext + ((__u32)ext[1] + 1) * 8;
    }
    if (next != IPPROTO_UDP)
        return pass();

    struct udphdr *udp = cursor;
    if ((void *)(udp + 1) > data_end)
        return pass();
    __u16 port = bpf_ntohs(udp->dest);
    if (port < tandem_port || port > tandem_port_last)
        return pass();

    if (data_end - data > tandem_frame_max)
        return pass();

    // No socket on this queue (not opened yet, or closed): the redirect fails into XDP_PASS
    // and the kernel's UDP path answers.
    int verdict = bpf_redirect_map(&tandem_xsks, ctx->rx_queue_index, XDP_PASS);
    return count(verdict == XDP_REDIRECT ? 0 : 1, verdict);
}

// The project's licence; the program calls no GPL-only helper.
char _license[] SEC("license") = "MIT OR Apache-2.0";
