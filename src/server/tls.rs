//! Mutually authenticated TLS for the partner link (RFC 7031 §8: identify, authenticate and
//! encrypt the partner; RFC 8156 §10: TLS per RFC 7525).
//!
//! Both servers present a certificate from the CA the operator configures, and each checks
//! that the other's certificate names the configured partner: the primary through rustls's
//! server-name check, the secondary by checking the client certificate's subject names itself
//! (rustls's client verifier checks the chain, not the name). Only rustls's connection objects
//! are made here; sockets stay with the peer thread. The crypto provider is passed explicitly,
//! so nothing is installed process-wide.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS setting or a partner is refused; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the kind needed.
    #[error("{0}")]
    Pem(String),
    /// The partner name is not a valid DNS name.
    #[error("partner name `{0}` is not a valid DNS name")]
    BadName(String),
    /// rustls refused the configuration or the handshake.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The partner presented no certificate.
    #[error("the partner presented no certificate")]
    NoPeerCertificate,
    /// The partner's certificate does not name the configured partner.
    #[error("the partner's certificate is not for `{expected}` ({detail})")]
    WrongName {
        /// The configured partner name.
        expected: String,
        /// What webpki said.
        detail: String,
    },
}

/// The PEM material and the partner's name.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA certificates both partners' certificates must chain to.
    pub ca: Vec<CertificateDer<'static>>,
    /// Our certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The DNS name the partner's certificate must carry.
    pub partner_name: String,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if v.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no certificate found")));
    }
    Ok(v)
}

impl TlsMaterial {
    /// From PEM bytes.
    pub fn from_pem(
        ca: &[u8],
        chain: &[u8],
        key: &[u8],
        partner_name: &str,
    ) -> Result<TlsMaterial, TlsError> {
        ServerName::try_from(partner_name.to_string())
            .map_err(|_| TlsError::BadName(partner_name.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
        Ok(TlsMaterial {
            ca: certs(ca, "CA certificates")?,
            chain: certs(chain, "certificate chain")?,
            key: Arc::new(key),
            partner_name: partner_name.to_string(),
        })
    }

    /// From PEM files (as the operator configures them).
    pub fn load(
        ca: &Path,
        chain: &Path,
        key: &Path,
        partner_name: &str,
    ) -> Result<TlsMaterial, TlsError> {
        Self::from_pem(&read(ca)?, &read(chain)?, &read(key)?, partner_name)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The primary's side: verifies the secondary's chain and name, presents our certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let cfg = ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }

    /// The secondary's side: requires a client certificate chaining to the CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| TlsError::Pem(format!("client verifier: {e}")))?;
        let cfg = ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }

    /// A connection from the primary to its secondary (rustls checks the secondary's name).
    pub fn connect(&self, cfg: &Arc<ClientConfig>) -> Result<ClientConnection, TlsError> {
        let name = ServerName::try_from(self.partner_name.clone())
            .map_err(|_| TlsError::BadName(self.partner_name.clone()))?;
        Ok(ClientConnection::new(cfg.clone(), name)?)
    }

    /// A connection the secondary accepted; call [`TlsMaterial::check_client`] once the
    /// handshake is done.
    pub fn accept(&self, cfg: &Arc<ServerConfig>) -> Result<ServerConnection, TlsError> {
        Ok(ServerConnection::new(cfg.clone())?)
    }

    /// After the handshake on the secondary: the client's certificate must name the partner.
    pub fn check_client(&self, conn: &ServerConnection) -> Result<(), TlsError> {
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(TlsError::NoPeerCertificate)?;
        let name = ServerName::try_from(self.partner_name.as_str())
            .map_err(|_| TlsError::BadName(self.partner_name.clone()))?;
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::WrongName {
            expected: self.partner_name.clone(),
            detail: format!("unparsable certificate: {e}"),
        })?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|e| TlsError::WrongName {
                expected: self.partner_name.clone(),
                detail: e.to_string(),
            })
    }
}
