//! Tests of parsing and validating configurations.

use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = parse("<embedded default>", EMBEDDED_DEFAULT).unwrap();
    assert_eq!(c.subnets.len(), 1);
    assert_eq!(c.server.listen[0].port(), defaults::LOOPBACK_PORT);
    let pd = &c.subnets[0].pools[1];
    assert_eq!(pd.kind, ResourceKind::Prefix);
    assert_eq!(pd.count, 1 << 23);
    assert_eq!(
        pd.resource(1),
        "2001:db8:8000:100::".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(pd.index_of("2001:db8:8000:100::".parse().unwrap()), Some(1));
    assert_eq!(pd.index_of("2001:db8:8000:101::".parse().unwrap()), None);
}

fn err(text: &str) -> ConfigError {
    parse("t.toml", text).unwrap_err()
}

const HEAD: &str = "[server]\nlisten=[\"[::1]:5547\"]\n";

const SUBNET: &str =
    "[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{prefix=\"2001:db8::/64\"}]\n";

fn failover_cfg(body: &str) -> Result<Config, ConfigError> {
    parse(
        "t.toml",
        &format!("{HEAD}{SUBNET}[failover]\nca=\"ca.pem\"\ncert=\"a.pem\"\nkey=\"a.key\"\n{body}"),
    )
}

#[test]
fn failover_section_defaults_and_errors() {
    let c = failover_cfg("role=\"primary\"\npartner=\"2001:db8::b\"\npartner_name=\"tandem-b\"\n")
        .unwrap();
    let f = c.relationships[0].clone();
    assert_eq!(f.role, Role::Primary);
    assert_eq!(
        f.partner,
        Some("[2001:db8::b]:647".parse().unwrap()),
        "a bare address takes port 647"
    );
    assert_eq!(
        (f.mclt_secs, f.keepalive_secs, f.max_unacked),
        (3600, 5, 4096)
    );
    assert_eq!(f.auto_partner_down_secs, None);
    assert_eq!(
        c.server.control_socket_path(),
        c.server.data_dir.join("control.sock")
    );

    let e = failover_cfg("role=\"primary\"\npartner_name=\"tandem-b\"\n").unwrap_err();
    assert_eq!(e.field, "failover.partner");
    let e = failover_cfg("role=\"leader\"\npartner_name=\"tandem-b\"\n").unwrap_err();
    assert_eq!(e.field, "failover.role");
    assert!(e.message.contains("leader"), "{e}");
    assert!(e.line.is_some());
    let e = failover_cfg("role=\"secondary\"\npartner_name=\"2001:db8::a\"\n").unwrap_err();
    assert_eq!(e.field, "failover.partner_name");
    let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nmclt_secs=0\n").unwrap_err();
    assert_eq!(e.field, "failover.mclt_secs");
    // The skew is also how close the partners' times count as equal: bounded.
    for skew in [0, 61, 86400] {
        let e = failover_cfg(&format!(
            "role=\"secondary\"\npartner_name=\"a\"\nskew_max_secs={skew}\n"
        ))
        .unwrap_err();
        assert_eq!(e.field, "failover.skew_max_secs", "{skew}");
    }
    assert!(failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nskew_max_secs=60\n").is_ok());
    let e =
        failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nlisten=\"nowhere\"\n").unwrap_err();
    assert_eq!(e.field, "failover.listen");
    let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nmclt=5\n").unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    let s = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\n").unwrap();
    assert_eq!(
        s.relationships[0].listen,
        "[::]:647".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn overlap_names_both_pools_and_line() {
    let e = err(&format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{range=\"2001:db8::10-2001:db8::20\"}},\n {{range=\"2001:db8::20-2001:db8::30\"}}]\n"
    ));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.to_string().contains("overlaps subnet[0].pools[0]"), "{e}");
}

#[test]
fn prefix_longer_than_delegated_len_is_refused() {
    let e = err(&format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npd_pools=[{{prefix=\"2001:db8:1::/60\", delegated_len=56}}]\n"
    ));
    assert!(e.field.ends_with("delegated_len"), "{e}");
    assert_eq!(e.line, Some(6));
}

#[test]
fn unknown_field_and_bad_types_name_the_line() {
    let e = err(&format!("{HEAD}bogus = 1\n"));
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("bogus"), "{e}");
    let e = err(
        "[server]\nlisten=[\"nope\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{prefix=\"2001:db8::/64\"}]\n",
    );
    assert_eq!(e.field, "server.listen[0]");
    assert_eq!(e.line, Some(2));
}

#[test]
fn pool_outside_subnet_and_host_bits() {
    let e = err(&format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db9::/64\"}}]\n"
    ));
    assert!(e.message.contains("not all inside"), "{e}");
    let e = err(&format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::1/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n"
    ));
    assert!(e.message.contains("host bits"), "{e}");
}

#[test]
fn duplicate_subnet_id_and_bad_lifetimes() {
    let e = err(&format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{{prefix=\"2001:db8:1::/64\"}}]\n"
    ));
    assert!(e.message.contains("already used"), "{e}");
    let e = err(&format!(
        "{HEAD}[lease]\npreferred_lifetime_secs=100\nvalid_lifetime_secs=50\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n"
    ));
    assert!(e.message.contains("longer than valid"), "{e}");
}

#[test]
fn metrics_listen_is_an_address_and_port() {
    let c = parse("t.toml", &format!("{HEAD}{SUBNET}")).unwrap();
    assert_eq!(c.server.metrics_listen, None, "off unless asked for");
    let c = parse(
        "t.toml",
        &format!("{HEAD}metrics_listen=\"[::1]:9469\"\n{SUBNET}"),
    )
    .unwrap();
    assert_eq!(c.server.metrics_listen, Some("[::1]:9469".parse().unwrap()));
    let e = err(&format!("{HEAD}metrics_listen=\"::1\"\n{SUBNET}"));
    assert_eq!(e.field, "server.metrics_listen");
    assert!(e.message.contains("not an address and port"), "{e}");
}

#[test]
fn server_duid_is_hex_of_a_plausible_length() {
    let c = parse(
        "t.toml",
        &format!("{HEAD}duid=\"00:01:00:01:2a:3b:4c:5d:00:11:22:33:44:55\"\n{SUBNET}"),
    )
    .unwrap();
    assert_eq!(c.server.duid.unwrap().len(), 14);
    let e = err(&format!("{HEAD}duid=\"00:01\"\n{SUBNET}"));
    assert_eq!(e.field, "server.duid");
    let e = err(&format!("{HEAD}duid=\"xyz\"\n{SUBNET}"));
    assert_eq!(e.field, "server.duid");
}

#[test]
fn commit_interval_defaults_to_5_ms_and_is_bounded() {
    let c = parse("t.toml", &format!("{HEAD}{SUBNET}")).unwrap();
    assert_eq!(c.server.commit_interval_us, defaults::COMMIT_INTERVAL_US);
    let c = parse("t.toml", &format!("{HEAD}commit_interval_us=0\n{SUBNET}")).unwrap();
    assert_eq!(c.server.commit_interval_us, 0);
    let e = err(&format!("{HEAD}commit_interval_us=100001\n{SUBNET}"));
    assert_eq!(e.field, "server.commit_interval_us");
    assert!(e.message.contains("at most 100000"), "{e}");
}

#[test]
fn no_subnet_is_an_error() {
    let e = err(HEAD);
    assert_eq!(e.field, "subnet");
}

fn with_options(global: &str, subnet: &str) -> Result<Config, ConfigError> {
    parse(
        "t.toml",
        &format!(
            "{HEAD}[options]\n{global}\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{{prefix=\"2001:db8::/64\"}}]\n[subnet.options]\n{subnet}\n"
        ),
    )
}

#[test]
fn options_encode_and_the_subnet_level_wins() {
    let c = with_options(
        "dns_servers=[\"2001:db8::53\"]\ndomain_search=[\"example.net\"]\n\
         sol_max_rt_secs=3600\ninformation_refresh_secs=86400\n\
         ntp_servers=[\"2001:db8::123\",\"ntp.example.net\"]\n\
         vendor=[{enterprise=4491,suboptions=[{code=1,hex=\"0a0b\"}]}]\n\
         custom=[{code=100,text=\"hi\"}]",
        "dns_servers=[\"2001:db8:1::53\",\"2001:db8:2::53\"]",
    )
    .unwrap();
    let sub = &c.subnets[0].options;
    let dns: Vec<&[u8]> = sub.get(23).collect();
    let mut want = "2001:db8:1::53"
        .parse::<Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    want.extend("2001:db8:2::53".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(
        dns,
        vec![&want[..]],
        "the subnet's list replaces the global one"
    );
    assert_eq!(
        sub.get(24).next(),
        Some(&b"\x07example\x03net\x00"[..]),
        "global options apply underneath"
    );
    assert_eq!(sub.get(82).next(), Some(&3600u32.to_be_bytes()[..]));
    assert_eq!(
        sub.get(56).count(),
        2,
        "one NTP option per server (RFC 5908 §4)"
    );
    let ntp: Vec<&[u8]> = sub.get(56).collect();
    assert_eq!(&ntp[0][..4], &[0, 1, 0, 16], "address sub-option");
    assert_eq!(&ntp[1][..4], &[0, 3, 0, 17], "FQDN sub-option");
    assert_eq!(
        sub.get(17).next(),
        Some(&[0, 0, 0x11, 0x8b, 0, 1, 0, 2, 0x0a, 0x0b][..])
    );
    assert_eq!(sub.get(100).next(), Some(&b"hi"[..]));
    assert!(c.options.contains(23) && c.options.get(23).next().unwrap().len() == 16);
}

#[test]
fn bad_options_are_refused_with_line_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "custom=[{code=2,hex=\"00\"}]",
            "options.custom[0]",
            "Server Identifier",
        ),
        (
            "custom=[{code=23,hex=\"00\"}]",
            "options.custom[0]",
            "dns_servers",
        ),
        ("custom=[{code=100}]", "options.custom[0]", "exactly one"),
        (
            "custom=[{code=100,hex=\"0\"}]",
            "options.custom[0]",
            "odd number",
        ),
        (
            "custom=[{code=100,u8=1},{code=100,u8=2}]",
            "options.custom[1]",
            "twice",
        ),
        (
            "dns_servers=[\"ff02::1\"]",
            "options.dns_servers",
            "not a unicast",
        ),
        ("dns_servers=[]", "options.dns_servers", "empty"),
        ("domain_search=[\"a..b\"]", "options.domain_search", "label"),
        (
            "sol_max_rt_secs=10",
            "options.sol_max_rt_secs",
            "60..=86400",
        ),
        (
            "inf_max_rt_secs=90000",
            "options.inf_max_rt_secs",
            "60..=86400",
        ),
        (
            "information_refresh_secs=60",
            "options.information_refresh_secs",
            "IRT_MINIMUM",
        ),
        (
            "vendor=[{enterprise=1},{enterprise=1}]",
            "options.vendor[1]",
            "twice",
        ),
        ("colour=1", "", "unknown field"),
    ];
    for (global, field, words) in cases {
        let e = with_options(global, "").unwrap_err();
        assert_eq!(&e.field, field, "{global}: {e}");
        assert!(e.message.contains(words), "{global}: {e}");
        if !field.is_empty() {
            assert_eq!(e.line, Some(4), "{global}: {e}");
        }
    }
    let e = with_options("", "dns_servers=[\"fe80::1%eth0\"]").unwrap_err();
    assert_eq!(e.field, "subnet[0].options.dns_servers", "{e}");
}

#[test]
fn options_that_could_outgrow_a_reply_are_refused() {
    let big = "ab".repeat(600);
    let ok = with_options(&format!("custom=[{{code=100,hex=\"{big}\"}}]"), "");
    assert!(ok.is_ok(), "604 bytes fit");
    let e = with_options(
        &format!("custom=[{{code=100,hex=\"{big}\"}}]"),
        &format!("custom=[{{code=101,hex=\"{big}\"}}]"),
    )
    .unwrap_err();
    assert_eq!(e.field, "subnet[0].options");
    assert!(e.message.contains("1208 bytes"), "{e}");
}

fn with_reservations(body: &str, file: Option<&str>) -> Result<Config, ConfigError> {
    let text = format!(
        "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{range=\"2001:db8::100-2001:db8::1ff\"}}]\n\
         pd_pools=[{{prefix=\"2001:db8:8000::/40\",delegated_len=56}}]\n{body}"
    );
    parse_with("t.toml", &text, &mut |p| {
        assert_eq!(p, std::path::Path::new("res.txt"));
        file.map(str::to_string)
            .ok_or_else(|| "no such file".to_string())
    })
}

#[test]
fn reservations_from_toml_and_file_are_checked_and_indexed() {
    let file = "# OSS export\n\
                remote-id 4491:text:line-1 2001:db8:8000:100::/56\n\
                \n\
                duid 00:01:00:01:aa:bb:cc:dd 2001:db8::1f0   # a comment\n";
    let c = with_reservations(
        "reservations_file=\"res.txt\"\nreservations=[{hw_address=\"52:54:00:00:00:01\",addresses=[\"2001:db8::1f1\"]}]\n",
        Some(file),
    )
    .unwrap();
    let rs = &c.subnets[0].reservations;
    assert_eq!(rs.len(), 3);
    let id = rs
        .find(KeyKind::RemoteId, b"\x00\x00\x11\x8bline-1")
        .unwrap();
    assert_eq!(
        rs.get(id).prefixes().next().unwrap().to_string(),
        "2001:db8:8000:100::/56"
    );
    assert_eq!(rs.origin(id), "res.txt:2");
    assert!(
        rs.find(KeyKind::HwAddress, &[0x52, 0x54, 0, 0, 0, 1])
            .is_some()
    );
    assert!(!rs.uses(KeyKind::InterfaceId));

    // (subnet body, reservations file, file and line of the error, words in it)
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, Option<usize>, &'a str);
    let cases: &[Case] = &[
        (
            "reservations=[{duid=\"00:01:00:01:aa\",addresses=[\"2001:db8::99\"]}]",
            None,
            "t.toml",
            Some(8),
            "not one of subnet 1's pool resources",
        ),
        (
            "reservations=[{duid=\"00:01:00:01:aa\",prefixes=[\"2001:db8:8000:100::/60\"]}]",
            None,
            "t.toml",
            Some(8),
            "delegated length",
        ),
        (
            "reservations=[{duid=\"00:01:00:01:aa\",interface_id=\"text:x\",addresses=[\"2001:db8::100\"]}]",
            None,
            "t.toml",
            Some(8),
            "exactly one",
        ),
        (
            "reservations_file=\"res.txt\"",
            Some("duid 00:01:00:01:aa 2001:db8::100\nduid 00:01:00:01:aa 2001:db8::101\n"),
            "res.txt",
            Some(2),
            "reserved twice (also at res.txt:1)",
        ),
        (
            "reservations_file=\"res.txt\"",
            Some("duid 00:01:00:01:aa 2001:db8::100\nduid 00:01:00:01:bb 2001:db8::100\n"),
            "res.txt",
            Some(2),
            "also reserved at res.txt:1",
        ),
        (
            "reservations_file=\"res.txt\"",
            Some("circuit 01 2001:db8::100\n"),
            "res.txt",
            Some(1),
            "not a reservation kind",
        ),
        (
            "reservations_file=\"res.txt\"",
            None,
            "t.toml",
            Some(8),
            "no such file",
        ),
    ];
    for (body, file, in_file, line, words) in cases {
        let e = with_reservations(body, *file).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), (*in_file, *line), "{body}: {e}");
        assert!(e.message.contains(words), "{body}: {e}");
    }
    let e = parse(
        "t.toml",
        &format!("{HEAD}{SUBNET}reservations_file=\"res.txt\"\n"),
    )
    .unwrap_err();
    assert!(e.message.contains("reads no files"), "{e}");
}

#[test]
fn relay_selectors_parse_and_select_one_subnet_each() {
    let two = |second: &str| {
        parse(
            "t.toml",
            &format!(
                "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{{prefix=\"2001:db8:1::/64\"}}]\n\
                 relay={{interface_ids=[\"text:ge-0/0/1\",\"0a0b\"],addresses=[\"2001:db8:ff::1\"]}}\n\
                 [[subnet]]\nid=2\nprefix=\"2001:db8:2::/64\"\npools=[{{prefix=\"2001:db8:2::/64\"}}]\n{second}\n"
            ),
        )
    };
    let c = two("").unwrap();
    assert_eq!(
        c.subnets[0].relay_interface_ids,
        vec![
            b"ge-0/0/1".to_vec().into_boxed_slice(),
            vec![0x0a, 0x0b].into_boxed_slice()
        ]
    );
    assert_eq!(
        c.subnets[0].relay_addresses,
        vec!["2001:db8:ff::1".parse::<Ipv6Addr>().unwrap()]
    );
    let e = two("relay={interface_ids=[\"text:ge-0/0/1\"]}").unwrap_err();
    assert_eq!(e.field, "subnet[1].relay.interface_ids");
    assert!(e.message.contains("already selects subnet 1"), "{e}");
    let e = two("relay={addresses=[\"2001:db8:ff::1\"]}").unwrap_err();
    assert!(e.message.contains("already selects subnet 1"), "{e}");
    let e = two("relay={addresses=[\"nope\"]}").unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line),
        ("subnet[1].relay.addresses", Some(12))
    );
}

#[test]
fn prefix_exclude_encodes_the_subnet_id_bits_and_checks_its_fields() {
    let pd = |extra: &str| {
        parse(
            "t.toml",
            &format!(
                "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
                 pd_pools=[{{prefix=\"2001:db8:8000::/40\",delegated_len=56{extra}}}]\n"
            ),
        )
    };
    let x = |extra: &str| pd(extra).unwrap().subnets[0].pools[0].excluded.unwrap();
    let (b, n) = x(",excluded_prefix_len=64").encode(56);
    assert_eq!(&b[..n], &[64, 0], "the first /64 of each /56");
    let (b, n) = x(",excluded_prefix_len=60,excluded_subnet_id=3").encode(56);
    assert_eq!(&b[..n], &[60, 0x30], "4 bits, left-aligned");
    let (b, n) = x(",excluded_prefix_len=72,excluded_subnet_id=0x1ff").encode(56);
    assert_eq!(&b[..n], &[72, 0x01, 0xff], "16 bits");
    assert!(pd("").unwrap().subnets[0].pools[0].excluded.is_none());
    for (extra, field) in [
        (",excluded_prefix_len=56", "excluded_prefix_len"),
        (",excluded_prefix_len=129", "excluded_prefix_len"),
        (
            ",excluded_prefix_len=60,excluded_subnet_id=16",
            "excluded_subnet_id",
        ),
        (",excluded_subnet_id=1", "excluded_subnet_id"),
    ] {
        let e = pd(extra).unwrap_err();
        assert_eq!(
            e.field,
            format!("subnet[0].pd_pools[0].{field}"),
            "{extra}: {e}"
        );
    }
}

#[test]
fn failover_refuses_leases_shorter_than_30_s() {
    let text = |valid: u32| {
        format!(
            "[server]\nlisten=[\"[::1]:5547\"]\n[lease]\npreferred_lifetime_secs=2\nvalid_lifetime_secs={valid}\n\
             [[subnet]]\nid=7\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n\
             [failover]\nrole=\"secondary\"\npartner_name=\"a\"\nca=\"ca.pem\"\ncert=\"b.pem\"\nkey=\"b.key\"\n"
        )
    };
    let e = crate::config::parse("t", &text(29))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("subnet 7: 29 s") && e.contains("RFC 8156"),
        "{e}"
    );
    assert!(crate::config::parse("t", &text(30)).is_ok());
    // Without failover a short lease is the operator's business.
    let standalone = text(3).split("[failover]").next().unwrap().to_string();
    assert!(crate::config::parse("t", &standalone).is_ok());
}

#[test]
fn leasequery_section_defaults_and_errors() {
    let c = parse("t.toml", &format!("{HEAD}{SUBNET}")).unwrap();
    assert!(c.leasequery.requestors.is_empty() && c.leasequery.bulk_listen.is_empty());
    assert_eq!(
        c.leasequery.bulk_connections_max,
        defaults::BULK_LQ_CONNECTIONS_MAX
    );
    let lq = |body: &str| parse("t.toml", &format!("{HEAD}{SUBNET}[leasequery]\n{body}"));
    let c =
        lq("requestors=[\"::1\"]\nbulk_listen=[\"[::1]:547\"]\nbulk_connections_max=3\n").unwrap();
    assert_eq!(
        c.leasequery.bulk_listen,
        vec!["[::1]:547".parse::<SocketAddrV6>().unwrap()]
    );
    assert_eq!(c.leasequery.bulk_connections_max, 3);
    let e = lq("bulk_listen=[\"::1\"]\n").unwrap_err();
    assert_eq!(e.field, "leasequery.bulk_listen[0]");
    for n in [0, defaults::BULK_LQ_CONNECTIONS_LIMIT + 1] {
        let e = lq(&format!("bulk_connections_max={n}\n")).unwrap_err();
        assert_eq!(e.field, "leasequery.bulk_connections_max", "{n}");
    }
}

#[test]
fn extra_prefixes_hold_pools_and_may_not_overlap() {
    let sub = |extra: &str, pools: &str| {
        parse(
            "t.toml",
            &format!(
                "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\nextra_prefixes=[{extra}]\npools=[{pools}]\n\
                 [[subnet]]\nid=2\nprefix=\"2001:db8:9::/64\"\npools=[{{range=\"2001:db8:9::1-2001:db8:9::9\"}}]\n"
            ),
        )
    };
    let c = sub(
        "\"2001:db8:2::/64\"",
        "{range=\"2001:db8:1::1-2001:db8:1::9\"},{range=\"2001:db8:2::1-2001:db8:2::9\"}",
    )
    .unwrap();
    let s = &c.subnets[0];
    assert!(
        s.on_link("2001:db8:2::77".parse().unwrap()) && s.on_link("2001:db8:1::1".parse().unwrap())
    );
    assert!(!s.on_link("2001:db8:3::1".parse().unwrap()));
    assert_eq!(s.prefixes().count(), 2);
    // A range must lie inside one prefix; prefixes may not overlap each other or others'.
    let e = sub(
        "\"2001:db8:2::/64\"",
        "{range=\"2001:db8:3::1-2001:db8:3::9\"}",
    )
    .unwrap_err();
    assert_eq!(e.field, "subnet[0].pools[0]");
    let e = sub(
        "\"2001:db8:1::/80\"",
        "{range=\"2001:db8:1::1-2001:db8:1::9\"}",
    )
    .unwrap_err();
    assert_eq!(e.field, "subnet[0].extra_prefixes[0]");
    let e = sub(
        "\"2001:db8:2::/64\",\"2001:db8:2::/96\"",
        "{range=\"2001:db8:1::1-2001:db8:1::9\"}",
    )
    .unwrap_err();
    assert_eq!(e.field, "subnet[0].extra_prefixes[1]");
    let e = parse(
        "t.toml",
        &format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{{range=\"2001:db8:1::1-2001:db8:1::9\"}}]\n\
             [[subnet]]\nid=2\nprefix=\"2001:db8:9::/64\"\nextra_prefixes=[\"2001:db8:1::/48\"]\npools=[{{range=\"2001:db8:9::1-2001:db8:9::9\"}}]\n"
        ),
    )
    .unwrap_err();
    assert_eq!(e.field, "subnet[1].extra_prefixes[0]");
    assert!(e.to_string().contains("overlaps subnet 1"), "{e}");
    let e = sub("\"nonsense\"", "{range=\"2001:db8:1::1-2001:db8:1::9\"}").unwrap_err();
    assert_eq!(e.field, "subnet[0].extra_prefixes[0]");
}

/// Three subnets and the `[[failover]]` sections `sections` (each a body after its header).
fn relationships_cfg(sections: &[&str]) -> Result<Config, ConfigError> {
    let mut t = HEAD.to_string();
    for id in 1..=3 {
        t.push_str(&format!(
            "[[subnet]]\nid={id}\nprefix=\"2001:db8:{id}::/64\"\npools=[{{prefix=\"2001:db8:{id}::/64\"}}]\n"
        ));
    }
    for body in sections {
        t.push_str(&format!(
            "[[failover]]\nca=\"ca.pem\"\ncert=\"a.pem\"\nkey=\"a.key\"\npartner_name=\"p\"\n{body}"
        ));
    }
    parse("t.toml", &t)
}

#[test]
fn several_relationships_each_cover_their_own_subnets() {
    let c = relationships_cfg(&[
        "role=\"primary\"\nrelationship=\"edge-a\"\npartner=\"2001:db8::a\"\nsubnets=[3, 1]\n",
        "role=\"secondary\"\nrelationship=\"edge-b\"\nsubnets=[2]\n",
    ])
    .unwrap();
    assert_eq!(c.relationships.len(), 2);
    // In the configuration's order, whatever the list's.
    assert_eq!(c.relationships[0].subnets, vec![1, 3]);
    assert_eq!(c.relationships[1].subnets, vec![2]);
    assert_eq!(c.relationship_of_subnets(), vec![0, 1, 0]);
    let v = c.relationship_view(0);
    assert_eq!(
        v.subnets.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(v.relationships, vec![c.relationships[0].clone()]);

    // One section, `[failover]` or a single `[[failover]]`, covers every subnet unless told.
    let one = relationships_cfg(&["role=\"secondary\"\n"]).unwrap();
    assert_eq!(one.relationships[0].subnets, vec![1, 2, 3]);
    assert_eq!(one.relationship_of_subnets(), vec![0, 0, 0]);
    let single = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\n").unwrap();
    assert_eq!(single.relationships[0].subnets, vec![1]);
    assert!(
        parse("t", EMBEDDED_DEFAULT)
            .unwrap()
            .relationship_of_subnets()
            .is_empty()
    );
}

#[test]
fn several_relationships_refuse_what_would_share_a_pool_or_a_listener() {
    let field = |sections: &[&str]| relationships_cfg(sections).unwrap_err().field;
    let a = "role=\"secondary\"\nrelationship=\"a\"\nsubnets=[1]\n";
    // Each names its subnets.
    assert_eq!(
        field(&[
            a,
            "role=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:648\"\n"
        ]),
        "failover[1].subnets"
    );
    // A subnet in two relationships would have three partners.
    let e = relationships_cfg(&[
        a,
        "role=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:648\"\nsubnets=[1,2,3]\n",
    ])
    .unwrap_err();
    assert_eq!(e.field, "failover[1].subnets");
    assert!(e.message.contains("subnet 1 is already covered"), "{e}");
    // Every subnet is covered by one.
    let e = relationships_cfg(&[
        a,
        "role=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:648\"\nsubnets=[2]\n",
    ])
    .unwrap_err();
    assert!(e.message.contains("subnet 3 is in no"), "{e}");
    // Unknown and empty subnet lists.
    assert_eq!(
        field(&["role=\"secondary\"\nrelationship=\"a\"\nsubnets=[9]\n"]),
        "failover[0].subnets"
    );
    assert_eq!(
        field(&["role=\"secondary\"\nrelationship=\"a\"\nsubnets=[]\n"]),
        "failover[0].subnets"
    );
    // Names: required and distinct.
    assert_eq!(
        field(&[
            "role=\"secondary\"\nsubnets=[1]\n",
            "role=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:648\"\nsubnets=[2,3]\n"
        ]),
        "failover[0].relationship"
    );
    assert_eq!(
        field(&[
            a,
            "role=\"secondary\"\nrelationship=\"a\"\nlisten=\"[::1]:648\"\nsubnets=[2,3]\n"
        ]),
        "failover[1].relationship"
    );
    // Two secondaries on one listener could not tell their primaries apart.
    assert_eq!(
        field(&[a, "role=\"secondary\"\nrelationship=\"b\"\nsubnets=[2,3]\n"]),
        "failover[1].listen"
    );
    // A section's own errors name the section.
    assert_eq!(
        field(&[a, "role=\"leader\"\nrelationship=\"b\"\nsubnets=[2,3]\n"]),
        "failover[1].role"
    );
    // The unspecified address takes the port on every address.
    assert_eq!(
        field(&[
            "role=\"secondary\"\nrelationship=\"a\"\nlisten=\"[::]:647\"\nsubnets=[1]\n",
            "role=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:647\"\nsubnets=[2,3]\n"
        ]),
        "failover[1].listen"
    );
    // One section that lists its subnets lists them all: the rest would have no partner.
    let e = relationships_cfg(&["role=\"secondary\"\nsubnets=[1,2]\n"]).unwrap_err();
    assert!(e.message.contains("subnet 3 is in no"), "{e}");
    // An empty list is not a way to say "no partner".
    let e = parse("t.toml", &format!("failover = []\n{HEAD}{SUBNET}")).unwrap_err();
    assert!(e.message.contains("empty list"), "{e}");
    // Unknown keys are still refused.
    let e = relationships_cfg(&["role=\"secondary\"\nsubnet=[1]\n"]).unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
}
