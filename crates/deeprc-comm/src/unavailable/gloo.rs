//! The `gloo` backend was not compiled in (enable the cargo feature `gloo`
//! of deeprc-comm, which needs Debian's `libgloo-dev`).
//!
//! The names of the real module exist so that code naming them compiles
//! everywhere; creating a communicator answers
//! [`CommError::NotCompiled`](crate::CommError::NotCompiled).

#[cfg(feature = "tcp")]
use crate::tcp::StoreSpec;
use crate::{Backend, CommConfig, Result};
use std::{convert::Infallible, time::Duration};

/// The rank named by peer-failure errors when Gloo does not say which peer
/// failed.
pub const UNKNOWN_PEER: usize = usize::MAX;

/// An in-process rendezvous store; without the `gloo` feature it holds
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct HashStore(());

impl HashStore {
    /// A new, empty store.
    pub fn new() -> Self {
        HashStore(())
    }
}

/// Where ranks of a [`GlooComm`] meet.
#[derive(Debug, Clone)]
pub enum GlooStore {
    /// The same stores as the tcp backend (`DEEPRC_STORE`).
    #[cfg(feature = "tcp")]
    Spec(StoreSpec),
    /// An in-process store, for ranks that are threads.
    InProcess(HashStore),
}

#[cfg(feature = "tcp")]
impl From<StoreSpec> for GlooStore {
    fn from(s: StoreSpec) -> Self {
        GlooStore::Spec(s)
    }
}

impl From<HashStore> for GlooStore {
    fn from(s: HashStore) -> Self {
        GlooStore::InProcess(s)
    }
}

/// How to create a [`GlooComm`].
#[derive(Debug, Clone)]
pub struct GlooOptions {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store.
    pub store: GlooStore,
    /// The per-job secret.
    pub token: String,
    /// The address or host name to bind and advertise.
    pub hostname: String,
    /// Timeouts and limits.
    pub config: CommConfig,
}

impl GlooOptions {
    /// Options for `rank` of `size` with a store and a token; loopback.
    pub fn new(
        rank: usize,
        size: usize,
        store: impl Into<GlooStore>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            rank,
            size,
            store: store.into(),
            token: token.into(),
            hostname: "127.0.0.1".into(),
            config: CommConfig::default(),
        }
    }

    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `gloo` feature is off.
    pub fn from_env() -> Result<Self> {
        Err(Backend::Gloo.not_compiled())
    }

    /// Sets the configuration.
    pub fn with_config(mut self, config: CommConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the address or host name to bind and advertise.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }
}

/// A communicator over Gloo; without the `gloo` feature no value of this
/// type can exist.
#[derive(Debug)]
pub struct GlooComm {
    never: Infallible,
}

impl GlooComm {
    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `gloo` feature is off.
    pub fn from_env() -> Result<Self> {
        Err(Backend::Gloo.not_compiled())
    }

    /// Always [`CommError::NotCompiled`](crate::CommError::NotCompiled): the `gloo` feature is off.
    pub fn connect(options: GlooOptions) -> Result<Self> {
        let _ = options;
        Err(Backend::Gloo.not_compiled())
    }

    /// How long creating this communicator took.
    pub fn setup_time(&self) -> Duration {
        match self.never {}
    }

    /// The store prefix of this communicator's context.
    pub fn prefix(&self) -> &str {
        match self.never {}
    }
}

uninhabited_communicator!(GlooComm, Backend::Gloo);
