//! TLS 1.3 for both ends. The server uses a configured certificate chain
//! and key, or in dev mode a self-signed certificate it generates once and
//! keeps in its data directory (clients pin its SHA-256 fingerprint). The
//! client trusts a CA file, pins a certificate (file or fingerprint), or —
//! dev only — trusts anything.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::auth::hex;
use crate::config::Limits;
use crate::protocol::ALPN;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate, as lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref())
}

/// A certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("{}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
        if chain.is_empty() {
            bail!("{}: no certificate in it", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("{}: not a PEM private key", key.display()))?;
        Ok(Self { chain, key })
    }

    /// The dev certificate in `dir` (`dev-cert.pem`, `dev-key.pem`),
    /// generated on first use for `localhost` and 127.0.0.1.
    pub fn dev(dir: &Path) -> anyhow::Result<(Self, bool)> {
        let cert = dir.join("dev-cert.pem");
        let key = dir.join("dev-key.pem");
        if cert.exists() && key.exists() {
            return Ok((Self::load(&cert, &key)?, false));
        }
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let ck = rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, ck.cert.pem()).with_context(|| format!("{}", cert.display()))?;
        Ok((Self::load(&cert, &key)?, true))
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("{}", path.display()))
}

/// The QUIC server configuration: TLS, ALPN, and the transport limits.
pub fn server_config(id: Identity, limits: &Limits) -> anyhow::Result<quinn::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .context("certificate and key do not match")?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).context("TLS config unusable for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_bidi_streams.into());
    t.max_concurrent_uni_streams(limits.max_uni_streams.into());
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(limits.idle_timeout_s))
            .context("limits.idle_timeout_s too large")?,
    ));
    t.stream_receive_window(limits.stream_window_bytes.into());
    t.receive_window(
        (u64::from(limits.stream_window_bytes) * u64::from(limits.max_uni_streams).min(8))
            .try_into()
            .unwrap_or(quinn::VarInt::MAX),
    );
    t.datagram_receive_buffer_size(Some(limits.datagram_buffer_bytes));
    config.transport_config(Arc::new(t));
    Ok(config)
}

/// How a client decides to trust the server.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Certificates signed by the CAs in this PEM file (production).
    Ca(std::path::PathBuf),
    /// Exactly this certificate (its SHA-256 fingerprint, hex).
    Pin(String),
    /// Anything (development only; says so in the logs).
    InsecureDev,
}

impl Trust {
    /// From the client flags: `--ca`, `--cert` (pinned file),
    /// `--fingerprint`, `--insecure-dev`.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        fp: Option<&str>,
        insecure: bool,
    ) -> anyhow::Result<Self> {
        match (ca, cert, fp, insecure) {
            (Some(ca), None, None, false) => Ok(Self::Ca(ca.to_path_buf())),
            (None, Some(cert), None, false) => {
                let c = CertificateDer::from_pem_file(cert)
                    .with_context(|| format!("{}: not a PEM certificate", cert.display()))?;
                Ok(Self::Pin(fingerprint(&c)))
            }
            (None, None, Some(fp), false) => {
                let fp = fp.replace(':', "").to_ascii_lowercase();
                if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("--fingerprint must be a SHA-256 (64 hex digits)");
                }
                Ok(Self::Pin(fp))
            }
            (None, None, None, true) => Ok(Self::InsecureDev),
            (None, None, None, false) => {
                bail!(
                    "say how to trust the server: --ca FILE, --cert FILE, --fingerprint HEX or --insecure-dev"
                )
            }
            _ => bail!("give only one of --ca, --cert, --fingerprint, --insecure-dev"),
        }
    }
}

#[derive(Debug)]
struct Pinned {
    fingerprint: Option<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.fingerprint {
            Some(fp) if *fp != fingerprint(end_entity) => Err(rustls::Error::General(format!(
                "server certificate {} is not the pinned {fp}",
                fingerprint(end_entity)
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The QUIC client configuration for a trust choice.
pub fn client_config(trust: &Trust, stream_window: u32) -> anyhow::Result<quinn::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("{}", path.display()))?
            {
                roots
                    .add(c.with_context(|| format!("{}", path.display()))?)
                    .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: Some(fp.clone()),
                provider: provider(),
            }))
            .with_no_client_auth(),
        Trust::InsecureDev => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: None,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).context("TLS config unusable for QUIC")?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(60)).expect("small constant"),
    ));
    t.stream_receive_window(stream_window.into());
    t.datagram_receive_buffer_size(Some(1 << 20));
    config.transport_config(Arc::new(t));
    Ok(config)
}
