//! Cache keys: one sha256 per build step, over named fields in a fixed, documented encoding.
//!
//! # Encoding
//!
//! With `lp(x)` = the byte length of `x` as a big-endian `u64`, followed by the bytes of `x`:
//!
//! ```text
//! key = sha256( lp(domain) || lp(name_1) || lp(value_1) || … || lp(name_n) || lp(value_n) )
//! ```
//!
//! Fields are hashed in the order they are added. Every piece is length-prefixed, so the byte
//! string decodes back to exactly one (domain, field list): `("a","bc")` and `("ab","c")`, or a
//! field moved into the domain, can never give the same bytes. No separators, no escaping, no
//! dependence on the platform or on serde: a key is stable across processes, machines and
//! rbuild versions until the domain string (e.g. `rbuild.step.v1`) is bumped on purpose.
//!
//! # Inputs
//!
//! Alongside the hash, a [`KeyBuilder`] keeps [`Inputs`]: input name → the first
//! [`INPUT_DIGEST_LEN`] hex digits of `sha256(value)`. Records store only these digests, never
//! the values, so a record can say *which* input changed (see [`crate::explain`]) without
//! holding file contents or build-arg values. Short digests are deliberate: they only have to
//! tell "same" from "different" for one input of one step. They are not a secrecy device: a
//! low-entropy value can be guessed from its digest (and from the key), so secrets must never
//! be key fields at all (BuildKit does the same: a secret's content is not part of a key).
//!
//! # Input names
//!
//! The names the builder uses, and that [`Miss`](crate::Miss)'s `Display` understands:
//! [`PARENT`] (the parent step's key, or the base image's chain ID for a stage's first step),
//! [`INSTRUCTION`] (the instruction as expanded), [`BASE`] (the base image's chain ID),
//! [`PLATFORM`], `arg:<NAME>` ([`arg()`]), `file:<relative path>` ([`file()`], one per selected
//! source file of COPY/ADD, value = its [`FileSum`](crate::FileSum)), [`FILES`] (one digest of
//! all sources, when per-file inputs are not wanted), `mount:<target>` ([`mount()`]).
//! A name should appear once per key: the key hashes every occurrence, [`Inputs`] keeps the
//! last.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::digest::sha256_newtype;

sha256_newtype!(
    /// The cache key of one build step: sha256 over its [encoded fields](self), written and
    /// serialised as `sha256:<hex>`.
    CacheKey,
    "cache key"
);

/// Input name → short digest of its value (see the [module docs](self)).
pub type Inputs = BTreeMap<String, String>;

/// How many hex digits of `sha256(value)` an [`Inputs`] entry keeps (64 bits).
pub const INPUT_DIGEST_LEN: usize = 16;

/// The parent step's key, or the base image's chain ID for the first step of a stage.
pub const PARENT: &str = "parent";
/// The instruction as expanded (build args and env substituted).
pub const INSTRUCTION: &str = "instruction";
/// The base image's chain ID.
pub const BASE: &str = "base";
/// The target platform.
pub const PLATFORM: &str = "platform";
/// One digest over all the files a COPY/ADD selected (alternative to per-file inputs).
pub const FILES: &str = "files";
/// Prefix of build-arg inputs.
pub const ARG_PREFIX: &str = "arg:";
/// Prefix of per-file inputs.
pub const FILE_PREFIX: &str = "file:";
/// Prefix of bind-mount inputs.
pub const MOUNT_PREFIX: &str = "mount:";

/// `arg:<name>`: the input name of a build arg visible to the step.
pub fn arg(name: &str) -> String {
    format!("{ARG_PREFIX}{name}")
}

/// `file:<relative path>`: the input name of one source file of a COPY/ADD.
pub fn file(rel_path: &str) -> String {
    format!("{FILE_PREFIX}{rel_path}")
}

/// `mount:<target>`: the input name of a bind mount of a RUN step.
pub fn mount(target: &str) -> String {
    format!("{MOUNT_PREFIX}{target}")
}

/// The [`Inputs`] digest of a value: the first [`INPUT_DIGEST_LEN`] hex digits of its sha256.
pub fn input_digest(value: &[u8]) -> String {
    let mut hex = hex::encode(Sha256::digest(value));
    hex.truncate(INPUT_DIGEST_LEN);
    hex
}

/// Builds a [`CacheKey`] from named fields, keeping their [`Inputs`] alongside.
///
/// ```
/// use cache::key::{self, KeyBuilder};
///
/// let kb = KeyBuilder::new("rbuild.step.v1")
///     .field(key::PARENT, "sha256:0123")
///     .field(key::INSTRUCTION, "RUN make")
///     .field(&key::arg("VERSION"), "1.2");
/// let key = kb.finish();
/// assert!(key.to_string().starts_with("sha256:"));
/// assert_eq!(kb.inputs().len(), 3);
/// ```
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
    inputs: Inputs,
}

impl KeyBuilder {
    /// Start a key in `domain`, a name plus version for the kind of key (`rbuild.step.v1`).
    pub fn new(domain: &str) -> Self {
        let mut hasher = Sha256::new();
        put(&mut hasher, domain.as_bytes());
        KeyBuilder {
            hasher,
            inputs: Inputs::new(),
        }
    }

    /// Add one field (builder style).
    pub fn field(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(name, value);
        self
    }

    /// Add one field (for loops).
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        put(&mut self.hasher, name.as_bytes());
        put(&mut self.hasher, value);
        self.inputs.insert(name.to_string(), input_digest(value));
        self
    }

    /// The inputs added so far.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The key over the fields added so far (the builder stays usable).
    pub fn finish(&self) -> CacheKey {
        CacheKey::from_bytes(self.hasher.clone().finalize().into())
    }

    /// The key and the inputs.
    pub fn into_parts(self) -> (CacheKey, Inputs) {
        let key = self.finish();
        (key, self.inputs)
    }
}

/// `lp(x)`: big-endian u64 length, then the bytes.
fn put(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}
