//! Control-plane errors: creating, opening and administering named objects.
//!
//! Hot-path operations have their own small error types next to the object that
//! returns them (for example [`crate::TrySendError`]), which hand the payload back.

use std::io;
use std::time::Duration;

use crate::segment::Kind;

/// The result of a control-plane operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a control-plane operation failed. Every variant names the object concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is not a valid tally object name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An argument is out of its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `create` found a live object under the name.
    #[error("{0:?} already exists")]
    AlreadyExists(String),
    /// `open` found no live object under the name.
    #[error("{0:?} not found")]
    NotFound(String),
    /// The caller may not use the segment (mode bits, or owned by another user).
    #[error("permission denied on {name:?}: {reason}")]
    PermissionDenied {
        /// The object.
        name: String,
        /// Why.
        reason: String,
    },
    /// The segment was written by an incompatible version of tally.
    #[error("{name:?} has layout version {found}; this build reads version {expected}")]
    VersionMismatch {
        /// The object.
        name: String,
        /// Version this build understands.
        expected: u32,
        /// Version found in the segment.
        found: u32,
    },
    /// The segment holds another kind of object than the one asked for.
    #[error("{name:?} holds a {found}, not a {expected}")]
    KindMismatch {
        /// The object.
        name: String,
        /// Kind asked for.
        expected: Kind,
        /// Kind found.
        found: Kind,
    },
    /// The segment's payload type or object parameters differ from the ones asked for.
    /// For a payload type, `detail` names the first field that differs (see
    /// [`crate::Message`] for what is compared).
    #[error("{name:?}: layout mismatch: {detail}")]
    LayoutMismatch {
        /// The object.
        name: String,
        /// What differs.
        detail: String,
    },
    /// The segment's contents fail validation; nothing was read outside the mapping.
    #[error("{name:?} is corrupted: {detail}")]
    Corrupted {
        /// The object.
        name: String,
        /// What failed validation.
        detail: String,
    },
    /// The shared-memory file system has no room for the segment.
    #[error("no space in /dev/shm for {name:?}: asked for {bytes} bytes, {free} bytes free")]
    NoSpace {
        /// The object.
        name: String,
        /// Bytes asked for.
        bytes: u64,
        /// Bytes free in the file system when the create failed (as `statvfs` reports
        /// them to an unprivileged caller; 0 if it could not be read).
        free: u64,
    },
    /// Every slot of the segment's holder table is taken by a live holder.
    #[error("{name:?}: holder table full ({capacity} live holders)")]
    TableFull {
        /// The object.
        name: String,
        /// Table capacity chosen at create time.
        capacity: u32,
    },
    /// A role (producer, consumer) is already held by a live handle.
    #[error("{name:?}: the {role} role is held by a live handle")]
    RoleTaken {
        /// The object.
        name: String,
        /// The role.
        role: &'static str,
    },
    /// The handle was inherited through `fork`: it belongs to the parent. Open the
    /// object again in this process to use it here.
    #[error(
        "{name:?}: this handle belongs to pid {owner}, not this process (inherited through fork); open the object again here"
    )]
    Inherited {
        /// The object.
        name: String,
        /// The pid that opened the handle.
        owner: u32,
    },
    /// A bounded wait ran out.
    #[error("{name:?}: timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// The object.
        name: String,
        /// What was awaited.
        what: &'static str,
        /// How long the caller waited.
        waited: Duration,
    },
    /// An operating-system call failed.
    #[error("{op} {name:?}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The object.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, name: &str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound(name.to_owned()),
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                name: name.to_owned(),
                reason: format!("{op}: {source}"),
            },
            Some(libc::ELOOP) => Error::PermissionDenied {
                name: name.to_owned(),
                reason: "the name is a symbolic link".to_owned(),
            },
            _ => Error::Io {
                op,
                name: name.to_owned(),
                source,
            },
        }
    }

    pub(crate) fn corrupted(name: &str, detail: impl Into<String>) -> Self {
        Error::Corrupted {
            name: name.to_owned(),
            detail: detail.into(),
        }
    }
}
