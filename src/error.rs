//! Typed errors of the master, and their one conversion into a JS error.
//!
//! Every variant has a stable `code()` that JS sees as `err.code`, so callers can branch on it
//! without parsing messages.

use std::io;

use crate::options::OptionsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),

    #[error("invalid {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("failed to spawn {role} ({program}): {source}")]
    Spawn {
        role: &'static str,
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("the master has already stopped")]
    Stopped,
}

impl Error {
    /// Stable code exposed to JS as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Options(OptionsError::NodeVersion { .. }) => "ERR_EGG_CLUSTER_NODE_VERSION",
            Error::Options(_) => "ERR_EGG_CLUSTER_OPTIONS",
            Error::Json { .. } => "ERR_EGG_CLUSTER_INVALID_JSON",
            Error::Spawn { .. } => "ERR_EGG_CLUSTER_SPAWN",
            Error::Io { .. } => "ERR_EGG_CLUSTER_IO",
            Error::Stopped => "ERR_EGG_CLUSTER_STOPPED",
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
