#!/bin/sh
# dhclient -sf hook for tests/interop_dhclient.rs. ISC dhclient runs it for every event instead of
# dhclient-script; it changes nothing on the system and appends one record per event to the
# file named by $TDM_EVENTS (passed with `dhclient -e TDM_EVENTS=...`): one `key=value` line per
# variable, then an empty line. Values may contain spaces: dhclient prints an IAID or DUID whose
# bytes are all printable as a quoted string ("g@? ", with \" \\ and \ooo escapes), otherwise
# as colon-separated hex (88:bb:f6:06).
#
# DHCPv6 reasons: PREINIT6, BOUND6, RENEW6, REBIND6, DEPREF6, EXPIRE6, RELEASE6, STOP6.
# Variables (isc-dhcp-client 4.4): new_/old_ip6_address, new_/old_ip6_prefixlen (addresses),
# new_/old_ip6_prefix (delegated prefix, "addr/len"), new_iaid, new_renew (T1), new_rebind (T2),
# new_preferred_life, new_max_life, new_/old_dhcp6_client_id, new_/old_dhcp6_server_id,
# new_dhcp6_name_servers and new_dhcp6_domain_search (space-separated).
out="${TDM_EVENTS:-/dev/null}"
# The record is built first and appended with one printf, so a reader never sees half of it (the
# test also ignores a record not yet followed by its empty line).
record=$(
    printf 'reason=%s\n' "$reason"
    printf 'interface=%s\n' "$interface"
    printf 'new_ip6_address=%s\n' "$new_ip6_address"
    printf 'new_ip6_prefixlen=%s\n' "$new_ip6_prefixlen"
    printf 'new_ip6_prefix=%s\n' "$new_ip6_prefix"
    printf 'old_ip6_address=%s\n' "$old_ip6_address"
    printf 'old_ip6_prefix=%s\n' "$old_ip6_prefix"
    printf 'new_iaid=%s\n' "$new_iaid"
    printf 'new_renew=%s\n' "$new_renew"
    printf 'new_rebind=%s\n' "$new_rebind"
    printf 'new_preferred_life=%s\n' "$new_preferred_life"
    printf 'new_max_life=%s\n' "$new_max_life"
    printf 'client_id=%s\n' "${new_dhcp6_client_id:-$old_dhcp6_client_id}"
    printf 'server_id=%s\n' "${new_dhcp6_server_id:-$old_dhcp6_server_id}"
    printf 'name_servers=%s\n' "$new_dhcp6_name_servers"
    printf 'domain_search=%s\n' "$new_dhcp6_domain_search"
)
printf '%s\n\n' "$record" >> "$out"
exit 0
