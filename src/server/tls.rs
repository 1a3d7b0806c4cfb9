//! TLS for the server: a certificate and key (PEM) to serve TLS with, and optionally a CA
//! whose certificates clients must present (mTLS). Files are read and checked at start-up,
//! so a wrong path or a bad PEM stops the server with its name instead of failing the
//! first handshake.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServeError;

/// The PEM files TLS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ServeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ServeError::Tls(format!("{what} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ServeError::Tls(format!(
            "{what} {}: not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// tonic's TLS settings for these files.
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    let cert = read_pem(&files.cert, "--tls-cert")?;
    let key = read_pem(&files.key, "--tls-key")?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        let ca = read_pem(ca, "--tls-client-ca")?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(config)
}
