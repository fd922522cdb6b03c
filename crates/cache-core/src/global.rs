//! Process-wide state for a function or server: the catalog (created once, inside
//! the runtime that will drive its Redis connections) and logging.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::app::App;
use crate::config::Config;

/// Why the process cannot serve: safe to show (names a variable, never a value).
#[derive(Debug, Clone)]
pub struct StartupError {
    /// The environment variable to set or fix.
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StartupError {
    /// 503 JSON naming the variable: the function is up but cannot serve until the
    /// deployment's configuration is fixed.
    pub fn response(&self) -> http::Response<crate::body::Body> {
        crate::handlers::json_error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "configuration_error",
            &self.message,
            Some(serde_json::json!({ "variable": self.variable })),
        )
    }
}

static APP: OnceLock<Result<Arc<App>, StartupError>> = OnceLock::new();

/// The process's catalog, built from the environment on first use.
pub(crate) fn global_app() -> Result<&'static Arc<App>, &'static StartupError> {
    APP.get_or_init(|| {
        let config = Config::from_env().map_err(|e| StartupError {
            variable: e.var,
            message: e.to_string(),
        })?;
        build(config)
    })
    .as_ref()
}

/// Install `catalog` as the process's catalog (dev server). Returns false if one exists.
pub fn set_global_app(app: Arc<App>) -> bool {
    APP.set(Ok(app)).is_ok()
}

fn build(config: Config) -> Result<Arc<App>, StartupError> {
    if config.deployed && config.redis_url.is_none() {
        // The embedded store is for the dev server and local runs. Deployed, each
        // function and each instance would keep a private cache: the cron's warm
        // would never reach /api/models, and nothing would say so.
        return Err(StartupError {
            variable: "REDIS_URL",
            message: "REDIS_URL is not set: a deployed function needs the shared Redis \
                      (without it every instance would keep a private cache the cron never warms)"
                .into(),
        });
    }
    App::new(config).map_err(|e| {
        let e = e.to_string();
        let variable = if e.contains("REDIS_TLS_CA_CERT") {
            "REDIS_TLS_CA_CERT"
        } else {
            "REDIS_URL"
        };
        StartupError {
            variable,
            message: format!("{variable} cannot be used: {e}"),
        }
    })
}

/// Logging (and Sentry when `SENTRY_DSN` is set): see [`crate::telemetry`].
pub fn init_tracing() {
    crate::telemetry::init();
}
