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
    let f = c.failover.unwrap();
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
    let e =
        failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nlisten=\"nowhere\"\n").unwrap_err();
    assert_eq!(e.field, "failover.listen");
    let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nmclt=5\n").unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    let s = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\n").unwrap();
    assert_eq!(
        s.failover.unwrap().listen,
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
fn no_subnet_is_an_error() {
    let e = err(HEAD);
    assert_eq!(e.field, "subnet");
}
