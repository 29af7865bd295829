//! The executor: runs build steps. `sandbox` holds every syscall (namespaces, mounts,
//! pivot_root, credentials, exec) so the rest of the builder can be tested without root.

pub mod copy;
pub mod sandbox;
pub mod users;
