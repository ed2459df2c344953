//! Whom the agent trusts to be its collector over `https://` and `wss://`.
//!
//! By default, the system's root certificates (what reqwest and tokio-tungstenite do on
//! their own). `--ca-cert FILE` trusts the CA certificates in FILE *instead*: the
//! operator has named the authority that signs this collector's certificate, and also
//! trusting every public CA would only widen who could stand in for it (put several CAs
//! in the file to trust several). `--pin sha256:...` accepts only a certificate whose
//! SHA-256 (of its DER encoding, what `openssl x509 -noout -fingerprint -sha256` prints)
//! is pinned; alone it is the whole check (a self-signed certificate works, its name
//! and dates are not looked at); with `--ca-cert` the certificate must also chain to
//! that CA and name the collector's host.
//!
//! One [`rustls::ClientConfig`] serves both the WebSocket and the REST fallback.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// How a pin is written, completing "--pin ...".
pub const PIN_USAGE: &str = "must be sha256: followed by the certificate's SHA-256 in hex or base64, \
                             e.g. from `openssl x509 -in CERT -noout -fingerprint -sha256`";

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The pin of `der`.
    pub fn of(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }

    /// Reads `sha256:` followed by 64 hex digits (colons allowed, as openssl prints
    /// them) or the base64 of the 32 bytes.
    pub fn parse(text: &str) -> Result<Pin, String> {
        let usage = PIN_USAGE;
        let text = text.trim();
        let Some(value) = text.strip_prefix("sha256:").or_else(|| text.strip_prefix("SHA256:")) else {
            return Err(usage.into());
        };
        let hex: String = value.chars().filter(|c| *c != ':').collect();
        let bytes = if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default()).collect()
        } else {
            let b64 = value.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
                .map_err(|_| usage.to_owned())?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| usage.to_owned())?;
        Ok(Pin(bytes))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The TLS settings for `ca_cert` and `pins`; `None` when neither is given (the
/// libraries' defaults, the system's roots, apply). Errors name the file.
pub fn client_config(ca_cert: Option<&Path>, pins: &[Pin]) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if ca_cert.is_none() && pins.is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?;
    let roots = ca_cert.map(read_roots).transpose()?;
    let config = if pins.is_empty() {
        builder.with_root_certificates(roots.unwrap_or_else(rustls::RootCertStore::empty)).with_no_client_auth()
    } else {
        let chain = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("cannot use the CA certificates")?,
            ),
            None => None,
        };
        let verifier = Pinned { pins: pins.to_vec(), chain, provider };
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the CA certificate {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "the CA certificate {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| anyhow::anyhow!("the CA certificate {} cannot be used: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Accepts only pinned certificates (and, given a CA, only those that chain to it).
#[derive(Debug)]
struct Pinned {
    pins: Vec<Pin>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

/// The certificate is not one of the pinned ones.
#[derive(Debug)]
struct NotPinned(Pin);

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the collector's certificate {} is not the one pinned with --pin", self.0)
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = Pin::of(end_entity);
        if !self.pins.contains(&pin) {
            let error = OtherError(Arc::new(NotPinned(pin)));
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(error)));
        }
        match &self.chain {
            Some(chain) => chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            // The pin names this very certificate: nothing more to check. Its key still
            // has to sign the handshake (below).
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An error's whole chain in one line, and, when the collector's certificate was the
/// problem, what to do about it.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut certificate = None;
    let mut next = Some(error);
    while let Some(e) = next {
        let line = e.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        // io::Error hides the error it wraps from `source()` (its text shows it), and
        // the TLS error may sit in an io::Error in an io::Error.
        let mut candidate = Some(e);
        while let Some(c) = candidate {
            if let Some(rustls::Error::InvalidCertificate(error)) = c.downcast_ref::<rustls::Error>() {
                certificate = Some(error.clone());
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static));
        }
        next = e.source();
    }
    let not_pinned = match &certificate {
        Some(CertificateError::Other(other)) => other.0.downcast_ref::<NotPinned>(),
        _ => None,
    };
    match (not_pinned, &certificate) {
        // rustls shows our error in its Debug form: say it in words instead.
        (Some(not_pinned), _) => {
            format!("{not_pinned} (if the collector's certificate was renewed on purpose, pin the new one)")
        }
        (None, Some(_)) => format!(
            "{text} (the collector's TLS certificate is not trusted: if a private CA signed it, pass \
             --ca-cert FILE with that CA's certificate; or pin it with --pin sha256:... from \
             `openssl x509 -in CERT -noout -fingerprint -sha256`)"
        ),
        (None, None) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_in_hex_or_base64() {
        let pin = Pin::of(b"certificate");
        let hex: String = pin.0.iter().map(|b| format!("{b:02X}")).collect();
        let colons: Vec<String> = pin.0.iter().map(|b| format!("{b:02X}")).collect();
        for text in [
            format!("sha256:{hex}"),
            format!("sha256:{}", hex.to_lowercase()),
            format!("sha256:{}", colons.join(":")),
            pin.to_string(),
            pin.to_string().trim_end_matches('=').to_owned(),
        ] {
            assert_eq!(Pin::parse(&text), Ok(pin), "{text}");
        }
        for bad in ["", "sha256:", "md5:abcd", &hex, "sha256:abcd", "sha256:!!!", &format!("sha256:{hex}00")] {
            let err = Pin::parse(bad).unwrap_err();
            assert!(err.contains("sha256:"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for (path, expected) in [(&missing, "cannot read the CA certificate"), (&empty, "holds no certificate")] {
            let err = format!("{:#}", client_config(Some(path), &[]).unwrap_err());
            assert!(err.contains(expected) && err.contains(&path.display().to_string()), "{err}");
        }
        assert!(client_config(None, &[]).unwrap().is_none());
    }
}
