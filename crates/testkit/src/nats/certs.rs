//! Test certificates made with `rcgen`: a CA, a server certificate for
//! `127.0.0.1`/`localhost`, a client certificate, and a second, untrusted CA
//! with its own client certificate for negative tests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Whether the server also asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// The server presents its certificate; clients need only trust
    /// [`TlsFiles::ca`].
    ServerOnly,
    /// Mutual TLS (`verify: true`): clients must also present a certificate
    /// signed by [`TlsFiles::ca`], such as [`TlsFiles::client_cert`].
    Mutual,
}

/// PEM files of a TLS setup, all in one directory.
///
/// The server uses `server_cert`/`server_key` and trusts `ca`. A client
/// trusts `ca` and, under [`TlsMode::Mutual`], presents `client_cert` with
/// `client_key`. The `untrusted_*` files come from a second CA the server
/// knows nothing of: a client presenting them is refused under mutual TLS,
/// and a client trusting only `untrusted_ca` refuses the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The mode the server was configured with.
    pub mode: TlsMode,
    /// The CA certificate that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server certificate, for `127.0.0.1`, `::1` and `localhost`.
    pub server_cert: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by [`TlsFiles::ca`].
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    /// A CA the server does not trust.
    pub untrusted_ca: PathBuf,
    /// A client certificate signed by [`TlsFiles::untrusted_ca`].
    pub untrusted_client_cert: PathBuf,
    /// The untrusted client certificate's private key.
    pub untrusted_client_key: PathBuf,
}

impl TlsFiles {
    /// Generates fresh keys and certificates into `dir` (created if missing)
    /// as `ca.pem`, `server-cert.pem`, `server-key.pem`, `client-cert.pem`,
    /// `client-key.pem`, `untrusted-ca.pem`, `untrusted-client-cert.pem` and
    /// `untrusted-client-key.pem`.
    pub fn generate(dir: &Path, mode: TlsMode) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the cert dir {}", dir.display()))?;
        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };

        let (ca_pem, trusted) = new_ca("durabus test CA")?;
        let (untrusted_ca_pem, untrusted) = new_ca("durabus untrusted test CA")?;
        let (server_cert, server_key) = leaf(
            &trusted,
            "durabus test server",
            &["127.0.0.1", "::1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) = leaf(
            &trusted,
            "durabus test client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let (untrusted_client_cert, untrusted_client_key) = leaf(
            &untrusted,
            "durabus untrusted test client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        Ok(Self {
            mode,
            ca: write("ca.pem", ca_pem)?,
            server_cert: write("server-cert.pem", server_cert)?,
            server_key: write("server-key.pem", server_key)?,
            client_cert: write("client-cert.pem", client_cert)?,
            client_key: write("client-key.pem", client_key)?,
            untrusted_ca: write("untrusted-ca.pem", untrusted_ca_pem)?,
            untrusted_client_cert: write("untrusted-client-cert.pem", untrusted_client_cert)?,
            untrusted_client_key: write("untrusted-client-key.pem", untrusted_client_key)?,
        })
    }
}

/// A self-signed CA: its certificate PEM and an issuer to sign leaves with.
fn new_ca(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A certificate for `names` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating a key")?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).context("certificate parameters")?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate of {common_name}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}
