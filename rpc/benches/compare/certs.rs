//! The self-signed certificate that the tonic TLS server and the raw quinn server present.

use std::path::Path;

/// One certificate for `localhost` and 127.0.0.1, with its key, in DER and PEM.
pub struct Certs {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Certs {
    pub fn generate() -> crate::Result<Certs> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(Certs {
            cert_der: certified.cert.der().to_vec(),
            key_der: certified.signing_key.serialize_der(),
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        })
    }

    pub fn save(&self, dir: &Path) -> crate::Result<()> {
        std::fs::write(dir.join("cert.pem"), &self.cert_pem)?;
        std::fs::write(dir.join("key.pem"), &self.key_pem)?;
        Ok(())
    }

    pub fn load(dir: &Path) -> crate::Result<Certs> {
        let cert_pem = std::fs::read_to_string(dir.join("cert.pem"))?;
        let key_pem = std::fs::read_to_string(dir.join("key.pem"))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)?;
        let cert_der = pem_body(&cert_pem)?;
        Ok(Certs {
            cert_der,
            key_der: key.serialize_der(),
            cert_pem,
            key_pem,
        })
    }
}

/// Decodes the base64 body of a single-block PEM file.
fn pem_body(pem: &str) -> crate::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    Ok(data_encoding::BASE64.decode(body.as_bytes())?)
}
