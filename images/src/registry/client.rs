//! One connection to one repository of one registry: the tokio runtime, the oci-client
//! `Client`, credentials, the choice between HTTP and HTTPS, and the retry loop.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use super::error::{Access, Ctx, Error, Result, Target};
use super::{RegistryOptions, RetryPolicy, UploadMode};
use crate::reference::Reference;

/// Env var listing registries (`host:port`, comma-separated) to reach over plain HTTP.
pub const INSECURE_REGISTRIES_ENV: &str = "RBUILD_INSECURE_REGISTRIES";

/// A repository on a registry, ready for requests.
pub(crate) struct Session {
    rt: tokio::runtime::Runtime,
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
    /// The reference in oci-client's terms (same registry, repository, tag and digest).
    pub oref: oci_client::Reference,
    pub ctx: Ctx,
    retry: RetryPolicy,
}

impl Session {
    pub fn open(
        reference: &Reference,
        opts: &RegistryOptions,
        access: Access,
        upload: UploadMode,
    ) -> Result<Session> {
        install_crypto_provider();
        let registry = reference.domain().to_string();
        let plain_http = use_plain_http(&registry, &opts.insecure_registries);
        let (auth, credential_note) = match &opts.credentials {
            Credentials::Anonymous => (RegistryAuth::Anonymous, None),
            Credentials::Basic { username, password } => (
                RegistryAuth::Basic(username.clone(), password.clone()),
                Some(format!("the credentials given for user {username}")),
            ),
            Credentials::DockerConfig => docker_config_auth(&registry)?,
        };
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(opts.connect_timeout),
            read_timeout: Some(opts.read_timeout),
            user_agent: concat!("rbuild/", env!("CARGO_PKG_VERSION")),
            // Used by blob uploads only (manifests are always one PUT): see `UploadMode`.
            use_monolithic_push: upload == UploadMode::Monolithic,
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to a default client on error; we want to know.
        let client =
            oci_client::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Client(format!("tokio runtime: {e}")))?;
        Ok(Session {
            rt,
            client,
            auth,
            oref: oci_reference(reference),
            ctx: Ctx {
                registry,
                repository: reference.path().to_string(),
                target: Target::Api,
                access,
                credential_note,
            },
            retry: opts.retry.clone(),
        })
    }

    /// Runs the async part of a push or pull to completion on this session's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The same repository, pinned to `digest` (for manifests fetched by digest).
    pub fn oref_digest(&self, digest: &str) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.oref.registry().to_string(),
            self.oref.repository().to_string(),
            digest.to_string(),
        )
    }

    /// Logs in (the token handshake, or basic auth) for `op`. Done once up front so that a
    /// wrong password or an unreachable registry fails here with a clear message: oci-client
    /// swallows authentication errors that happen lazily inside later requests.
    pub async fn authenticate(&self, op: RegistryOperation) -> Result<()> {
        let ctx = self.ctx.with_target(Target::Api);
        self.retry(|| async {
            self.client
                .auth(&self.oref, &self.auth, op)
                .await
                .map(|_| ())
                .map_err(|e| ctx.oci(e))
        })
        .await
    }

    /// Runs `op` until it succeeds, fails for good, or has been tried `retry.tries` times;
    /// waits `initial_backoff`, doubling up to `max_backoff`, between tries. Only
    /// [`Error::is_transient`] failures are retried.
    pub async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let tries = self.retry.tries.max(1);
        let mut delay = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < tries => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e.with_tries(attempt)),
            }
        }
    }
}

/// oci-client's reference for ours: same registry, repository, tag and digest.
pub(crate) fn oci_reference(r: &Reference) -> oci_client::Reference {
    let registry = r.domain().to_string();
    let repository = r.path().to_string();
    match (r.tag(), r.digest()) {
        (Some(tag), Some(d)) => oci_client::Reference::with_tag_and_digest(
            registry,
            repository,
            tag.to_string(),
            d.to_string(),
        ),
        (None, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
        (tag, None) => oci_client::Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or(crate::reference::DEFAULT_TAG).to_string(),
        ),
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (with its credential
    /// helpers), as `docker login` writes it; anonymous when it has nothing for the registry.
    #[default]
    DockerConfig,
    /// No credentials.
    Anonymous,
    /// This user name and password (HTTP basic, or exchanged for a token).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
}

/// The Docker config file `docker_credential` reads.
fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// Credentials for `registry` from the Docker config, and a note on them for error hints.
/// No file, or nothing for this registry, means anonymous.
fn docker_config_auth(registry: &str) -> Result<(RegistryAuth, Option<String>)> {
    match docker_config_path().filter(|p| p.is_file()) {
        Some(path) => credentials_from_file(&path, registry),
        None => Ok((RegistryAuth::Anonymous, None)),
    }
}

fn credentials_from_file(
    path: &std::path::Path,
    registry: &str,
) -> Result<(RegistryAuth, Option<String>)> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let shown = path.display().to_string();
    let err = |reason: String| Error::Credentials {
        registry: registry.to_string(),
        config: shown.clone(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    // Docker Hub's entry is keyed by its legacy v1 URL; docker_credential normalizes
    // `docker.io` to it.
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok((
            RegistryAuth::Basic(user.clone(), password),
            Some(format!("{shown} has credentials for user {user}")),
        )),
        // An identity token is an OAuth refresh token; oci-client cannot exchange one.
        Ok(DockerCredential::IdentityToken(_)) => Ok((
            RegistryAuth::Anonymous,
            Some(format!(
                "{shown} has only an identity token for {registry}, which rbuild cannot use \
                 (it went on anonymously); log in with a user name and password"
            )),
        )),
        Err(E::NoCredentialConfigured) => Ok((RegistryAuth::Anonymous, None)),
        // Helpers answer "credentials not found" with a failure; Docker treats that as none.
        Err(E::HelperFailure { stdout, stderr, .. })
            if stdout.contains("not found") || stderr.contains("not found") =>
        {
            Ok((RegistryAuth::Anonymous, None))
        }
        Err(E::ConfigReadError) => Err(err("it is not valid JSON".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// True if `registry` (`host[:port]`) is to be reached over plain HTTP: loopback addresses
/// (127.0.0.0/8, `localhost`, `::1`), and registries listed in `extra` or in
/// `$RBUILD_INSECURE_REGISTRIES`. Everything else gets HTTPS, as Docker does.
pub fn use_plain_http(registry: &str, extra: &[String]) -> bool {
    if is_loopback(registry) {
        return true;
    }
    let from_env = std::env::var(INSECURE_REGISTRIES_ENV).unwrap_or_default();
    extra
        .iter()
        .map(String::as_str)
        .chain(from_env.split(','))
        .map(str::trim)
        .any(|r| !r.is_empty() && r.eq_ignore_ascii_case(registry))
}

/// True for `localhost`, 127.0.0.0/8 and `::1`, with or without a port.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        match registry.rsplit_once(':') {
            // A single ':' separates the port; more mean a bare IPv6 address.
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => registry,
        }
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// reqwest is built with rustls but without a crypto provider of its own (oci-client's
/// default would pull aws-lc, a second crypto library with a long C build); the workspace
/// already builds `ring` for ureq, so that is the one installed here, once per process.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: that one is used, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Backoff defaults: 3 tries, waiting 0.5 s then 1 s (doubling, at most 2 s).
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            tries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in [
            "127.0.0.1:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.example:5000",
            "128.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn insecure_list_is_exact_host_port() {
        let extra = vec!["registry.lan:5000".to_string(), " other:1 ".to_string()];
        assert!(use_plain_http("registry.lan:5000", &extra));
        assert!(use_plain_http("other:1", &extra));
        assert!(!use_plain_http("registry.lan", &extra));
        assert!(!use_plain_http("registry.lan:5001", &extra));
        assert!(use_plain_http("localhost:5000", &[]));
    }

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.json");
        // "user:secret" in base64, as `docker login` writes it.
        std::fs::write(
            &path,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpzZWNyZXQ="},
                "https://index.docker.io/v1/":{"auth":"aHViOmh1YnB3"}}}"#,
        )
        .expect("write");
        let (auth, note) = credentials_from_file(&path, "127.0.0.1:5000").expect("creds");
        assert!(matches!(&auth, RegistryAuth::Basic(u, p) if u == "user" && p == "secret"));
        assert!(note.is_some_and(|n| n.contains("user")));
        let (auth, _) = credentials_from_file(&path, "docker.io").expect("hub creds");
        assert!(matches!(&auth, RegistryAuth::Basic(u, _) if u == "hub"));
        let (auth, note) = credentials_from_file(&path, "other:5000").expect("none");
        assert!(matches!(auth, RegistryAuth::Anonymous) && note.is_none());

        std::fs::write(&path, "{not json").expect("write");
        let e = credentials_from_file(&path, "127.0.0.1:5000").expect_err("malformed");
        assert!(matches!(e, Error::Credentials { .. }), "{e}");
        assert!(e.to_string().contains("docker login 127.0.0.1:5000"), "{e}");
    }

    #[test]
    fn references_map_to_oci_client() {
        let r = Reference::parse("127.0.0.1:5000/a/b:1.0").expect("ref");
        let o = oci_reference(&r);
        assert_eq!(o.registry(), "127.0.0.1:5000");
        assert_eq!(o.repository(), "a/b");
        assert_eq!(o.tag(), Some("1.0"));
        assert_eq!(o.digest(), None);
        let d = format!("sha256:{}", "a".repeat(64));
        let o = oci_reference(&Reference::parse(&format!("127.0.0.1:5000/a/b@{d}")).expect("ref"));
        assert_eq!(o.digest(), Some(d.as_str()));
        assert_eq!(o.tag(), None);
        let hub = oci_reference(&Reference::parse("nginx").expect("ref"));
        assert_eq!(hub.repository(), "library/nginx");
        assert_eq!(hub.resolve_registry(), "index.docker.io");
    }
}
