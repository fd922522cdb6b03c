//! Process-wide state for a function or server: the catalog (created lazily, once,
//! inside the runtime that will drive its Redis connections) and logging.

use std::sync::{Arc, OnceLock};

use crate::catalog::Catalog;
use crate::config::Config;

/// Why the process cannot serve: safe to show (names a variable, never a value).
#[derive(Debug, Clone)]
pub struct StartupError(pub String);

static CATALOG: OnceLock<Result<Arc<Catalog>, StartupError>> = OnceLock::new();

/// The process's catalog, built from the environment on first use.
pub fn global_catalog() -> Result<&'static Arc<Catalog>, &'static StartupError> {
    CATALOG
        .get_or_init(|| build(Config::from_env().map_err(|e| StartupError(e.to_string()))?))
        .as_ref()
}

/// Install `catalog` as the process's catalog (dev server). Returns false if one exists.
pub fn set_global_catalog(catalog: Arc<Catalog>) -> bool {
    CATALOG.set(Ok(catalog)).is_ok()
}

fn build(config: Config) -> Result<Arc<Catalog>, StartupError> {
    Catalog::new(config)
        .map_err(|_| StartupError("REDIS_URL is not a valid redis://, rediss:// or redis-cluster:// URL".into()))
}

/// Logging (and Sentry when `SENTRY_DSN` is set): see [`crate::telemetry`].
pub fn init_tracing() {
    crate::telemetry::init();
}
