//! The partner link's mutual TLS: a correct pair connects and carries a failover frame; a
//! partner with a certificate from another CA, with no certificate, or with the wrong name is
//! refused with an error that says why. Handshakes run in memory between the two rustls
//! connections (no sockets).

mod common;

use rustls::pki_types::pem::PemObject;
use rustls::{ClientConnection, ServerConnection};
use std::io::{Read, Write};
use tandem_server::tls::{TlsError, TlsMaterial};

use common::pki::Ca;

fn material(ca: &Ca, own_name: &str, partner: &str) -> TlsMaterial {
    let (chain, key) = ca.leaf(own_name);
    TlsMaterial::from_pem(
        ca.cert_pem.as_bytes(),
        chain.as_bytes(),
        key.as_bytes(),
        partner,
    )
    .unwrap()
}

/// Moves TLS records both ways until both handshakes finish or one side fails.
fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..32 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

/// Primary `a` (name tandem-a) connects to secondary `b` (name tandem-b).
fn pair(
    primary: &TlsMaterial,
    secondary: &TlsMaterial,
) -> (
    ClientConnection,
    ServerConnection,
    Result<(), rustls::Error>,
) {
    let mut c = primary.connect(&primary.client_config().unwrap()).unwrap();
    let mut s = secondary
        .accept(&secondary.server_config().unwrap())
        .unwrap();
    let r = handshake(&mut c, &mut s);
    (c, s, r)
}

#[test]
fn correct_pair_connects_and_carries_a_frame() {
    let ca = Ca::new("tandem test CA");
    let a = material(&ca, "tandem-a", "tandem-b");
    let b = material(&ca, "tandem-b", "tandem-a");
    let (mut c, mut s, r) = pair(&a, &b);
    r.unwrap();
    b.check_client(&s).unwrap();
    // A CONTACT message, framed, from the primary to the secondary.
    let mut frame = Vec::new();
    tandem_core::failover::codec::encode(
        &tandem_core::failover::peer::PeerMsg::Contact,
        7,
        1_800_000_000,
        &mut frame,
    )
    .unwrap();
    c.writer().write_all(&frame).unwrap();
    let mut wire = Vec::new();
    c.write_tls(&mut wire).unwrap();
    assert!(
        !wire.windows(frame.len()).any(|w| w == frame.as_slice()),
        "the frame must not cross in clear"
    );
    s.read_tls(&mut &wire[..]).unwrap();
    s.process_new_packets().unwrap();
    let mut got = vec![0u8; frame.len()];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, frame);
}

#[test]
fn certificate_from_another_ca_is_refused_both_ways() {
    let ca1 = Ca::new("tandem test CA");
    let ca2 = Ca::new("someone else's CA");
    let a = material(&ca1, "tandem-a", "tandem-b");
    // The secondary's certificate comes from another CA, but it trusts ca1 for clients.
    let (chain, key) = ca2.leaf("tandem-b");
    let b = TlsMaterial::from_pem(
        ca1.cert_pem.as_bytes(),
        chain.as_bytes(),
        key.as_bytes(),
        "tandem-a",
    )
    .unwrap();
    let (_, _, r) = pair(&a, &b);
    let e = r.unwrap_err();
    assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
    // And the other way: the primary's certificate is from another CA.
    let (chain, key) = ca2.leaf("tandem-a");
    let a2 = TlsMaterial::from_pem(
        ca1.cert_pem.as_bytes(),
        chain.as_bytes(),
        key.as_bytes(),
        "tandem-b",
    )
    .unwrap();
    let b2 = material(&ca1, "tandem-b", "tandem-a");
    let (_, _, r) = pair(&a2, &b2);
    assert!(
        r.is_err(),
        "a client certificate from another CA must be refused"
    );
}

#[test]
fn secondary_with_the_wrong_name_is_refused_by_the_primary() {
    let ca = Ca::new("tandem test CA");
    let a = material(&ca, "tandem-a", "tandem-b");
    let b = material(&ca, "tandem-mallory", "tandem-a");
    let (_, _, r) = pair(&a, &b);
    let e = r.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("name"), "{e}");
}

#[test]
fn primary_with_the_wrong_name_is_refused_by_the_secondary() {
    let ca = Ca::new("tandem test CA");
    let a = material(&ca, "tandem-mallory", "tandem-b");
    let b = material(&ca, "tandem-b", "tandem-a");
    let (_, s, r) = pair(&a, &b);
    r.unwrap(); // the chain is fine; the name is the secondary's own check
    let e = b.check_client(&s).unwrap_err();
    assert!(matches!(e, TlsError::WrongName { .. }), "{e:?}");
    assert!(e.to_string().contains("tandem-a"), "{e}");
}

#[test]
fn client_without_a_certificate_is_refused() {
    let ca = Ca::new("tandem test CA");
    let b = material(&ca, "tandem-b", "tandem-a");
    // A client that trusts the CA but presents no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut c =
        ClientConnection::new(std::sync::Arc::new(cfg), "tandem-b".try_into().unwrap()).unwrap();
    let mut s = b.accept(&b.server_config().unwrap()).unwrap();
    let e = handshake(&mut c, &mut s).unwrap_err();
    assert!(
        matches!(e, rustls::Error::NoCertificatesPresented)
            || e.to_string().contains("certificate"),
        "{e:?}"
    );
}

#[test]
fn bad_material_is_a_clear_error() {
    let ca = Ca::new("tandem test CA");
    let (chain, key) = ca.leaf("tandem-a");
    let e = TlsMaterial::from_pem(b"not pem", chain.as_bytes(), key.as_bytes(), "tandem-b")
        .err()
        .unwrap();
    assert!(e.to_string().contains("CA certificates"), "{e}");
    let e = TlsMaterial::from_pem(ca.cert_pem.as_bytes(), chain.as_bytes(), b"", "tandem-b")
        .err()
        .unwrap();
    assert!(e.to_string().contains("private key"), "{e}");
    let e = TlsMaterial::from_pem(
        ca.cert_pem.as_bytes(),
        chain.as_bytes(),
        key.as_bytes(),
        "not a name!",
    )
    .err()
    .unwrap();
    assert!(matches!(e, TlsError::BadName(_)), "{e:?}");
    let e = TlsMaterial::load(
        "/nonexistent/ca.pem".as_ref(),
        "/x".as_ref(),
        "/y".as_ref(),
        "tandem-b",
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
