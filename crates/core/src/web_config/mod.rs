//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format, so the
//! same file works for node_exporter and for us.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
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
    /// Accepted only to be refused with a clear message (not implemented).
    #[serde(default)]
    pub client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Served over HTTP/1.1 only: `true` is refused.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Extra response headers on every response.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Headers the server sets itself, which a web config may not override (as exporter-toolkit).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "server",
    "transfer-encoding",
    "www-authenticate",
];

/// The loaded web configuration: an optional TLS server config, the basic-auth users and the
/// extra response headers.
pub struct WebSecurity {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

fn response_headers(
    http: Option<&HttpServerConfig>,
) -> Result<Vec<(axum::http::HeaderName, axum::http::HeaderValue)>, String> {
    let Some(http) = http else {
        return Ok(Vec::new());
    };
    if http.http2 == Some(true) {
        return Err("http_server_config.http2: the exporter serves HTTP/1.1 only".into());
    }
    let mut out = Vec::new();
    for (name, value) in &http.headers {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "http_server_config.headers: {name} is set by the server itself"
            ));
        }
        let name = axum::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("http_server_config.headers: {name:?}: {e}"))?;
        let value = axum::http::HeaderValue::from_str(value)
            .map_err(|e| format!("http_server_config.headers.{name}: {e}"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// Why a web config file cannot be used; the exporter does not start, or a reload keeps the
/// running one.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML of the file's shape, or a key whose value cannot be honoured.
    #[error("web config {}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    /// A hash that does not parse would lock its user out silently.
    #[error("web config {}: basic_auth_users.{user} is not a valid bcrypt hash", path.display())]
    BadHash { path: PathBuf, user: String },
}

pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
    let invalid = |why: String| WebConfigError::Invalid {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: WebConfigFile = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| invalid(e.to_string()))?;
    // Relative certificate paths are relative to the web config file, as in exporter-toolkit.
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = file
        .tls_server_config
        .as_ref()
        .map(|t| tls_config(t, base))
        .transpose()
        .map_err(invalid)?;
    let auth = if file.basic_auth_users.is_empty() {
        None
    } else {
        for (user, hash) in &file.basic_auth_users {
            // A hash that does not parse (truncated, wrong alphabet) would lock its user out
            // silently: refuse it here.
            if !hash.starts_with("$2") || hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(WebConfigError::BadHash {
                    path: path.to_owned(),
                    user: user.clone(),
                });
            }
        }
        Some(BasicAuth::new(file.basic_auth_users))
    };
    let headers = response_headers(file.http_server_config.as_ref()).map_err(invalid)?;
    Ok(WebSecurity { tls, auth, headers })
}

/// A TLS version by its exporter-toolkit name; rustls speaks TLS 1.2 and 1.3 only.
fn tls_version(key: &str, name: &str) -> Result<u8, String> {
    match name {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "{key} {name}: only TLS12 and TLS13 are supported (TLS 1.0 and 1.1 are not offered)"
        )),
        other => Err(format!("{key} {other}: not TLS12 or TLS13")),
    }
}

/// The crypto provider narrowed to the configured TLS 1.2 cipher suites and curves; TLS 1.3
/// suites are not configurable, as in Go.
fn provider(t: &TlsServerConfig) -> Result<rustls::crypto::CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        let mut chosen = Vec::new();
        for name in names {
            // Go spells the ChaCha20 suites with and without the trailing _SHA256.
            let wanted = if name.ends_with("CHACHA20_POLY1305") {
                format!("{name}_SHA256")
            } else {
                name.clone()
            };
            let suite = provider
                .cipher_suites
                .iter()
                .find(|s| {
                    s.version() == &rustls::version::TLS12 && s.suite().as_str() == Some(&wanted)
                })
                .ok_or_else(|| format!("cipher_suites: {name} is not a supported TLS 1.2 suite"))?;
            chosen.push(*suite);
        }
        let tls13: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        provider.cipher_suites = tls13.into_iter().chain(chosen).collect();
    }
    if let Some(names) = &t.curve_preferences {
        let mut chosen = Vec::new();
        for name in names {
            let group = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                other => {
                    return Err(format!(
                    "curve_preferences: {other} is not supported (X25519, CurveP256, CurveP384)"
                ))
                }
            };
            let kx = provider
                .kx_groups
                .iter()
                .find(|k| k.name() == group)
                .ok_or_else(|| format!("curve_preferences: {name} is not available"))?;
            chosen.push(*kx);
        }
        provider.kx_groups = chosen;
    }
    Ok(provider)
}

fn tls_config(t: &TlsServerConfig, base: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    if t.client_allowed_sans.is_some() {
        return Err(
            "client_allowed_sans is not supported: restrict clients with client_ca_file".into(),
        );
    }
    let provider = Arc::new(provider(t)?);
    let min = t
        .min_version
        .as_deref()
        .map(|v| tls_version("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let max = t
        .max_version
        .as_deref()
        .map(|v| tls_version("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if min > max {
        return Err(format!(
            "min_version TLS{min} is above max_version TLS{max}"
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    let certs = read_certs(&base.join(&t.cert_file))?;
    let key_path = base.join(&t.key_file);
    let key = read_key(&key_path)?;
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
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(false);
    Ok(Arc::new(config))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("{}: no private key found", path.display()),
        e => format!("{}: {e}", path.display()),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose, so a header that passed is
/// remembered and checked again without bcrypt, and so is a header that failed (for a while):
/// a client repeating a wrong password costs one bcrypt, not one per request. The locks are
/// held only for lookups, never during bcrypt. A user name that does not exist costs one bcrypt
/// of the same cost as a real one, so timing does not tell which names exist.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// The users' highest cost, for the dummy hash.
    cost: u32,
    /// What an unknown user is checked against; hashed on first use, off the async workers
    /// (building it on a reload stalled serving for a bcrypt).
    dummy_hash: OnceLock<String>,
    verified: Mutex<HashSet<String>>,
    /// Headers that failed: refused without bcrypt for a while.
    failed: Recent<String>,
}

/// How long a failure is remembered (a failed header, a guessing source).
const FAILED_TTL: Duration = Duration::from_secs(300);

/// Keys seen in the last `FAILED_TTL`, at most 4,096 of them (the oldest forgotten first when
/// full, all when every one is recent): failed headers, sources that guessed.
struct Recent<K>(Mutex<HashMap<K, Instant>>);

impl<K: std::hash::Hash + Eq> Recent<K> {
    const MAX: usize = 4096;

    fn new() -> Self {
        Recent(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, key: &K) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|at| at.elapsed() < FAILED_TTL)
    }

    fn insert(&self, key: K) {
        let mut map = self.lock();
        if map.len() >= Self::MAX {
            map.retain(|_, at| at.elapsed() < FAILED_TTL);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(key, Instant::now());
    }
}

/// Outcome of the cheap part of a check.
pub enum Precheck {
    /// Passed before: no bcrypt needed.
    Cached,
    /// Malformed, missing, or failed recently: refused without bcrypt.
    Refused,
    /// Needs a bcrypt verification ([`BasicAuth::verify`]) of this normalised header.
    Verify(String),
}

/// `Basic <token68>` with the scheme in any case and any run of spaces (RFC 7617, RFC 7235
/// `1*SP`), normalised so that spellings of one credential share their cache entries.
fn normalise(header: &str) -> Option<String> {
    let (scheme, rest) = header.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("basic") && !token.is_empty() && !token.contains(' '))
        .then(|| format!("Basic {token}"))
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        BasicAuth {
            users,
            cost,
            dummy_hash: OnceLock::new(),
            verified: Mutex::new(HashSet::new()),
            failed: Recent::new(),
        }
    }

    /// Keeps the headers `old` verified for users whose hash did not change, so that a reload
    /// does not send every scraper back through bcrypt (behind whoever is guessing).
    pub fn inherit(&self, old: &BasicAuth) {
        let kept: Vec<String> = old
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|h| {
                decode(h).is_some_and(|(user, _)| {
                    old.users.contains_key(&user) && old.users.get(&user) == self.users.get(&user)
                })
            })
            .cloned()
            .collect();
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kept);
    }

    /// The cheap part: a header seen valid before, or one that cannot be valid.
    pub fn precheck(&self, header: Option<&str>) -> Precheck {
        let Some(header) = header.and_then(normalise) else {
            return Precheck::Refused;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&header)
        {
            return Precheck::Cached;
        }
        if self.failed.contains(&header) || decode(&header).is_none() {
            return Precheck::Refused;
        }
        Precheck::Verify(header)
    }

    /// The bcrypt part, run off the async workers; remembers the outcome.
    pub fn verify(&self, header: &str) -> bool {
        let Some((user, password)) = decode(header) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (
                self.dummy_hash
                    .get_or_init(|| {
                        bcrypt::hash("not a password anyone has", self.cost).unwrap_or_default()
                    })
                    .as_str(),
                false,
            ),
        };
        let ok = bcrypt::verify(&password, hash).unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: only successful logins are remembered, and there are few users.
            if verified.len() > 64 {
                verified.clear();
            }
            verified.insert(header.to_owned());
        } else {
            self.failed.insert(header.to_owned());
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

/// User and password of a normalised `Basic` header.
fn decode(header: &str) -> Option<(String, String)> {
    let token = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Who gets the bcrypt threads. A source address that failed a check in the last 5 minutes
/// is "guessing": its checks run one at a time per source and take at most one of the two
/// slots between them, and a second one from the same source is refused at once. A source
/// that has not failed goes straight to the slots, so a first valid login waits for at most
/// the two checks running (about 0.1 s at cost 10), never behind a crowd of guesses.
struct BcryptScheduler {
    slots: tokio::sync::Semaphore,
    guessing_slot: tokio::sync::Semaphore,
    /// Sources that failed a check lately.
    failed: Recent<std::net::IpAddr>,
    /// Guessing sources with a check waiting or running.
    in_flight: std::sync::Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

static BCRYPT: std::sync::LazyLock<BcryptScheduler> =
    std::sync::LazyLock::new(|| BcryptScheduler {
        slots: tokio::sync::Semaphore::new(2),
        guessing_slot: tokio::sync::Semaphore::new(1),
        failed: Recent::new(),
        in_flight: Default::default(),
    });

impl BcryptScheduler {
    async fn check(
        &self,
        auth: Arc<BasicAuth>,
        header: String,
        peer: Option<std::net::IpAddr>,
    ) -> bool {
        /// Removes a guessing source from `in_flight` when its check ends or is dropped.
        struct InFlight<'a>(&'a BcryptScheduler, std::net::IpAddr);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.1);
            }
        }
        let guessing = peer.filter(|p| self.failed.contains(p));
        let mut _in_flight = None;
        let mut _gate = None;
        if let Some(p) = guessing {
            if !self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p)
            {
                tracing::debug!(target: "web", event = "auth_refused_guessing", peer = %p);
                return false;
            }
            _in_flight = Some(InFlight(self, p));
            match self.guessing_slot.acquire().await {
                Ok(g) => _gate = Some(g),
                Err(_) => return false,
            }
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || auth.verify(&header))
            .await
            .unwrap_or(false);
        if let (false, Some(p)) = (ok, peer) {
            self.failed.insert(p);
        }
        ok
    }
}

/// The bcrypt part of a check, scheduled by source (see [`BcryptScheduler`]).
pub async fn verify_scheduled(
    auth: Arc<BasicAuth>,
    header: String,
    peer: Option<std::net::IpAddr>,
) -> bool {
    BCRYPT.check(auth, header, peer).await
}

/// The parts of the web config a reload swaps while connections are served.
#[derive(Default)]
pub struct LiveWeb {
    pub auth: arc_swap::ArcSwapOption<BasicAuth>,
    /// `http_server_config.headers`, added to every response.
    pub headers: arc_swap::ArcSwap<Vec<(axum::http::HeaderName, axum::http::HeaderValue)>>,
}

#[cfg(test)]
mod tests;
