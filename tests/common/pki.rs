//! A throwaway certificate authority (rcgen) and leaf certificates for the partner link's
//! mutual TLS.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed CA with common name `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf certificate for `dns_name` signed by this CA: (certificate PEM, key PEM).
    pub fn leaf(&self, dns_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(vec![dns_name.to_string()]).unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `<dir>/<file>.pem` and `<dir>/<file>.key`: a leaf for `dns_name`.
    pub fn write_leaf(&self, dns_name: &str, dir: &Path, file: &str) {
        let (cert, key) = self.leaf(dns_name);
        std::fs::write(dir.join(format!("{file}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key).unwrap();
    }
}
