//! Errors of the registry client, and how oci-client's errors map onto them.
//!
//! Every variant names the registry, the repository and the manifest or blob involved, and
//! says what to do next, because the CLI prints `Display` as is. Transient failures
//! ([`Error::is_transient`]) are the ones the client retries.

use std::fmt;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_spec::image::Digest;

/// Result alias of the registry client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a request was about: a manifest (by tag or digest) or a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A manifest or index, by tag or digest (`1.0`, `sha256:…`).
    Manifest(String),
    /// A blob (config or layer).
    Blob(Digest),
    /// The registry's API root, for the authentication handshake (`GET /v2/`).
    Api,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Manifest(r) => write!(f, "manifest {r}"),
            Target::Blob(d) => write!(f, "blob {d}"),
            Target::Api => f.write_str("the API root /v2/"),
        }
    }
}

/// Where a failed request went: the registry, the repository and the manifest or blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `host[:port]` of the registry.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    /// The manifest or blob.
    pub target: Target,
}

/// Everything that can go wrong while pushing or pulling.
///
/// The request's [`Location`] is boxed in each variant: errors are rare, and a small
/// `Result` keeps the hot paths cheap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local store failed (a missing ref, a disk error, a corrupt local blob).
    #[error(transparent)]
    Store(#[from] crate::Error),

    /// No connection could be made or kept (refused, reset, timed out), even after retries.
    #[error(
        "cannot reach registry {registry} ({target} in repository {repository}) after {tries} \
         {}: {reason}; is the registry running, and is {registry} the right address?",
        plural(*tries, "try", "tries"),
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    Unreachable {
        /// Where the request went.
        at: Box<Location>,
        /// Attempts made.
        tries: u32,
        /// The underlying error, as text.
        reason: String,
    },

    /// The registry answered with a server error (5xx, or 408/429) every time.
    #[error(
        "registry {registry} failed on {target} in repository {repository} with HTTP {status} \
         after {tries} {}: {message}; the registry itself is failing: check its logs and \
         storage, then try again",
        plural(*tries, "try", "tries"),
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    Server {
        /// Where the request went.
        at: Box<Location>,
        /// HTTP status of the last answer.
        status: u16,
        /// Attempts made.
        tries: u32,
        /// The registry's message.
        message: String,
    },

    /// 401 or 403: missing, wrong or insufficient credentials.
    #[error(
        "{status} {}: registry {registry} refused {target} in repository {repository}: {hint}",
        if *status == 403 { "denied" } else { "unauthorized" },
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    Unauthorized {
        /// Where the request went.
        at: Box<Location>,
        /// 401 or 403.
        status: u16,
        /// What to do about it.
        hint: String,
    },

    /// The manifest, tag, blob or repository does not exist in the registry.
    #[error(
        "{target} not found in repository {repository} of registry {registry} ({message}); \
         check the name and tag, or push the image first",
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    NotFound {
        /// Where the request went.
        at: Box<Location>,
        /// The registry's message.
        message: String,
    },

    /// Any other refusal (4xx) or answer that breaks the distribution protocol.
    #[error(
        "registry {registry} rejected {target} in repository {repository}{}: {message}",
        status.map(|s| format!(" with HTTP {s}")).unwrap_or_default(),
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    Rejected {
        /// Where the request went.
        at: Box<Location>,
        /// HTTP status, when known.
        status: Option<u16>,
        /// What the registry (or the protocol check) said.
        message: String,
    },

    /// Content served by the registry does not hash to the digest it was asked for.
    #[error(
        "{target} from repository {repository} of registry {registry} failed verification: \
         expected {expected}, got {actual}; nothing was stored. The registry's copy is corrupt \
         (or something between us altered it): push the image again",
        registry = .at.registry,
        repository = .at.repository,
        target = .at.target
    )]
    DigestMismatch {
        /// Where the request went.
        at: Box<Location>,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },

    /// The image cannot be pulled or pushed as it is (unknown media type, no manifest for
    /// this platform, a non-sha256 digest, ...).
    #[error("image {reference} in registry {registry}: {reason}")]
    InvalidImage {
        /// `host[:port]` of the registry.
        registry: String,
        /// The reference, familiar form.
        reference: String,
        /// What is wrong.
        reason: String,
    },

    /// `~/.docker/config.json` (or a credential helper it names) could not be used.
    #[error(
        "cannot get credentials for registry {registry} from {config}: {reason}; fix the file \
         or run `docker login {registry}` again"
    )]
    Credentials {
        /// `host[:port]` of the registry.
        registry: String,
        /// The config file.
        config: String,
        /// What went wrong.
        reason: String,
    },

    /// The HTTP client or its runtime could not be set up.
    #[error("cannot start the registry client: {0}")]
    Client(String),
}

impl Error {
    /// True for failures worth retrying: connection errors and server-side statuses
    /// (5xx, 408 Request Timeout, 429 Too Many Requests).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Server { .. })
    }

    /// The registry, repository and manifest or blob of a failed request, if it was one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Unreachable { at, .. }
            | Error::Server { at, .. }
            | Error::Unauthorized { at, .. }
            | Error::NotFound { at, .. }
            | Error::Rejected { at, .. }
            | Error::DigestMismatch { at, .. } => Some(at),
            _ => None,
        }
    }

    /// Records how many attempts were made (for the message of the final error).
    pub(crate) fn with_tries(mut self, n: u32) -> Self {
        if let Error::Unreachable { tries, .. } | Error::Server { tries, .. } = &mut self {
            *tries = n;
        }
        self
    }
}

fn plural(n: u32, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Whether an operation reads or writes; chooses the wording of 401/403 hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

/// Where a request went, to turn oci-client's errors into ours.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub registry: String,
    pub repository: String,
    pub target: Target,
    pub access: Access,
    /// What we know about the credentials, for 401/403 hints.
    pub credential_note: Option<String>,
}

impl Ctx {
    fn at(&self) -> Box<Location> {
        Box::new(Location {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            target: self.target.clone(),
        })
    }

    pub fn with_target(&self, target: Target) -> Ctx {
        Ctx {
            target,
            ..self.clone()
        }
    }

    /// Maps an oci-client error. Transient errors come back with `tries: 1`; the retry loop
    /// fixes the count.
    pub fn oci(&self, e: OciDistributionError) -> Error {
        use OciDistributionError as E;
        match e {
            E::RequestError(e) => match e.status() {
                Some(s) => self.status(s.as_u16(), e.to_string()),
                None => self.unreachable(describe_reqwest(&e)),
            },
            E::ServerError { code, message, .. } => self.status(code, message),
            E::UnauthorizedError { .. } => self.status(401, String::new()),
            // The token service refused to issue a token (wrong password, no such user...).
            E::AuthenticationFailure(reason) => self.status(
                401,
                format!("the registry's token service refused: {}", reason.trim()),
            ),
            E::RegistryError { envelope, .. } => {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                // oci-client keeps the JSON error envelope of a 4xx but drops the status;
                // the envelope's code says which one it was.
                let status = envelope
                    .errors
                    .first()
                    .map(|e| match e.code {
                        OciErrorCode::Unauthorized => 401,
                        OciErrorCode::Denied => 403,
                        OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound => 404,
                        OciErrorCode::Toomanyrequests => 429,
                        _ => 400,
                    })
                    .unwrap_or(400);
                self.status(status, message)
            }
            E::DigestError(DigestError::VerificationError { expected, actual }) => {
                self.digest_mismatch(expected, actual)
            }
            E::IoError(e) => self.io(e),
            other => self.rejected(None, other.to_string()),
        }
    }

    /// Maps an I/O error from a response body stream: oci-client reports a failed digest
    /// check at the end of a blob stream as an `io::Error` wrapping a [`DigestError`];
    /// anything else on a body stream is the connection failing.
    pub fn io(&self, e: std::io::Error) -> Error {
        let digest_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<DigestError>());
        if let Some(DigestError::VerificationError { expected, actual }) = digest_error {
            return self.digest_mismatch(expected.clone(), actual.clone());
        }
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<OciDistributionError>());
        if let Some(OciDistributionError::RequestError(r)) = inner {
            return self.unreachable(describe_reqwest(r));
        }
        self.unreachable(e.to_string())
    }

    pub fn digest_mismatch(&self, expected: String, actual: String) -> Error {
        Error::DigestMismatch {
            at: self.at(),
            expected,
            actual,
        }
    }

    pub fn unreachable(&self, reason: String) -> Error {
        Error::Unreachable {
            at: self.at(),
            tries: 1,
            reason,
        }
    }

    pub fn rejected(&self, status: Option<u16>, message: impl Into<String>) -> Error {
        Error::Rejected {
            at: self.at(),
            status,
            message: message.into(),
        }
    }

    /// An error for an HTTP status.
    pub fn status(&self, status: u16, message: String) -> Error {
        let at = self.at();
        let message = message.trim().to_string();
        match status {
            401 | 403 => Error::Unauthorized {
                hint: self.auth_hint(status, &message),
                at,
                status,
            },
            404 => Error::NotFound {
                at,
                message: if message.is_empty() {
                    "HTTP 404".into()
                } else {
                    message
                },
            },
            408 | 429 | 500..=599 => Error::Server {
                at,
                status,
                tries: 1,
                message,
            },
            _ => Error::Rejected {
                at,
                status: Some(status),
                message,
            },
        }
    }

    fn auth_hint(&self, status: u16, message: &str) -> String {
        let mut hint = String::new();
        if !message.is_empty() {
            hint.push_str(message);
            hint.push_str("; ");
        }
        let registry = &self.registry;
        match (status, &self.credential_note) {
            (401, None) => hint.push_str(&format!(
                "run `docker login {registry}` (rbuild reads ~/.docker/config.json, or \
                 $DOCKER_CONFIG/config.json)"
            )),
            (401, Some(note)) => hint.push_str(&format!(
                "{note}, which the registry did not accept: run `docker login {registry}` again"
            )),
            (_, note) => {
                let verb = match self.access {
                    Access::Pull => "pull from",
                    Access::Push => "push to",
                };
                let who = note.as_deref().unwrap_or("anonymous access");
                hint.push_str(&format!(
                    "{who} is not allowed to {verb} repository {}: check its permissions, or \
                     `docker login {registry}` as a user who is",
                    self.repository
                ));
            }
        }
        hint
    }
}

/// A short description of a transport error, with its root cause (reqwest's own `Display`
/// says only "error sending request for url ...").
fn describe_reqwest(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}
