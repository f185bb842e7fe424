//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format, so the
//! same file works for node_exporter and for us.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// Accepted for compatibility; response headers are not configurable yet.
    #[serde(default)]
    pub http_server_config: Option<serde_json::Value>,
    /// user → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    pub curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

/// The loaded web configuration: an optional TLS server config and the basic-auth users.
pub struct WebSecurity {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
}

pub fn load(path: &Path) -> Result<WebSecurity, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("web config {}: {e}", path.display()))?;
    let file: WebConfigFile = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| format!("web config {}: {e}", path.display()))?;
    // Relative certificate paths are relative to the web config file, as in exporter-toolkit.
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = file
        .tls_server_config
        .as_ref()
        .map(|t| tls_config(t, base))
        .transpose()
        .map_err(|e| format!("web config {}: {e}", path.display()))?;
    let auth = if file.basic_auth_users.is_empty() {
        None
    } else {
        for (user, hash) in &file.basic_auth_users {
            // A hash that does not parse (truncated, wrong alphabet) would lock its user out
            // silently: refuse it here.
            if !hash.starts_with("$2") || hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "web config {}: basic_auth_users.{user} is not a valid bcrypt hash",
                    path.display()
                ));
            }
        }
        Some(BasicAuth::new(file.basic_auth_users))
    };
    Ok(WebSecurity { tls, auth })
}

fn tls_config(t: &TlsServerConfig, base: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match t.min_version.as_deref() {
        None | Some("TLS12") | Some("TLS10") | Some("TLS11") => {
            vec![&rustls::version::TLS13, &rustls::version::TLS12]
        }
        Some("TLS13") => vec![&rustls::version::TLS13],
        Some(other) => return Err(format!("unsupported min_version {other}")),
    };
    let certs = read_certs(&base.join(&t.cert_file))?;
    let key_path = base.join(&t.key_file);
    let key = rustls_pemfile::private_key(&mut reader(&key_path)?)
        .map_err(|e| format!("{}: {e}", key_path.display()))?
        .ok_or_else(|| format!("{}: no private key found", key_path.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca_file = t
                .client_ca_file
                .as_ref()
                .ok_or_else(|| format!("client_auth_type {auth_type} needs client_ca_file"))?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&base.join(ca_file))? {
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca_file: {e}"))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => return Err(format!("unsupported client_auth_type {other}")),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn reader(path: &Path) -> Result<BufReader<File>, String> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader(path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose, so a header that passed is
/// remembered and checked again without bcrypt; the lock is held only for that lookup, never
/// during bcrypt. A user name that does not exist costs one bcrypt of the same cost as a real
/// one, so timing does not tell which names exist.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// What an unknown user is checked against.
    dummy_hash: String,
    verified: Mutex<HashSet<String>>,
}

/// Outcome of the cheap part of a check.
pub enum Precheck {
    /// Passed before: no bcrypt needed.
    Cached,
    /// Malformed or missing: refused without bcrypt.
    Refused,
    /// Needs a bcrypt verification ([`BasicAuth::verify`]).
    Verify(String),
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy_hash = bcrypt::hash("not a password anyone has", cost).unwrap_or_default();
        BasicAuth {
            users,
            dummy_hash,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The cheap part: a header seen valid before, or one that cannot be valid.
    pub fn precheck(&self, header: Option<&str>) -> Precheck {
        let Some(header) = header else {
            return Precheck::Refused;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(header)
        {
            return Precheck::Cached;
        }
        if header.starts_with("Basic ") {
            Precheck::Verify(header.to_owned())
        } else {
            Precheck::Refused
        }
    }

    /// The bcrypt part, run off the async workers; remembers a header that passes.
    pub fn verify(&self, header: &str) -> bool {
        let Some((user, password)) = header
            .strip_prefix("Basic ")
            .and_then(|e| {
                base64::engine::general_purpose::STANDARD
                    .decode(e.trim())
                    .ok()
            })
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|d| d.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        let ok = bcrypt::verify(&password, hash).unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: only successful logins are remembered, and there are few users.
            if verified.len() > 64 {
                verified.clear();
            }
            verified.insert(header.to_owned());
        }
        ok
    }

    /// Both parts in one call (tests and blocking callers).
    pub fn check(&self, header: Option<&str>) -> bool {
        match self.precheck(header) {
            Precheck::Cached => true,
            Precheck::Refused => false,
            Precheck::Verify(h) => self.verify(&h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let auth = BasicAuth::new([("alice".to_owned(), hash)].into());
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.check(Some(&header("alice", "s3cret"))));
        assert!(auth.check(Some(&header("alice", "s3cret"))));
        assert!(!auth.check(Some(&header("alice", "wrong"))));
        assert!(!auth.check(Some(&header("bob", "s3cret"))));
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(Some("Basic !!!")));
        assert!(!auth.check(None));
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_too() {
        let hash = bcrypt::hash("s3cret", 6).expect("hash");
        let auth = BasicAuth::new([("alice".to_owned(), hash)].into());
        let header = |u: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:nope"))
            )
        };
        let time = |h: &str| {
            let t = std::time::Instant::now();
            for _ in 0..3 {
                assert!(!auth.check(Some(h)));
            }
            t.elapsed()
        };
        let (known, unknown) = (time(&header("alice")), time(&header("mallory")));
        // Same cost: within a factor, where a skipped bcrypt would be ~1000x faster.
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }
}
