//! Why a configuration could not be turned into a running server.

/// Why a configuration could not be turned into a running server (after it validated:
/// unreadable keys, bad PEM, and the like).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("access log: {0}")]
    AccessLog(String),
    /// Files the configuration names that cannot be used, each with its field and line.
    #[error("{0}")]
    Files(gatehouse_config::ConfigErrors),
}
