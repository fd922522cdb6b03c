//! The gateways to warm, as data.
//!
//! Which gateways exist changes upstream more often than this code: the list is
//! configuration (`GATEWAYS`), and a gateway this table does not know gets
//! conservative defaults (slow deadline, prices per token).

use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

/// How the catalog API expresses a gateway's prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // "per token" etc. are the units' names
pub enum PriceUnit {
    PerToken,
    PerMillion,
    PerBillion,
}

impl PriceUnit {
    /// Power of ten to divide by to get USD per token.
    pub fn exponent(self) -> u32 {
        match self {
            PriceUnit::PerToken => 0,
            PriceUnit::PerMillion => 6,
            PriceUnit::PerBillion => 9,
        }
    }
}

/// Which per-request deadline a gateway gets (the old frontend's 5 s / 30 s split).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineClass {
    Fast,
    Slow,
}

/// A built-in gateway description.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GatewaySpec {
    pub id: &'static str,
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub class: DeadlineClass,
    pub price_unit: PriceUnit,
    /// The catalog API wants `Authorization: Bearer $GATEWAYZ_TOKEN_<ID>` for it.
    pub needs_token: bool,
}

const fn spec(
    id: &'static str,
    name: &'static str,
    aliases: &'static [&'static str],
    class: DeadlineClass,
    price_unit: PriceUnit,
    needs_token: bool,
) -> GatewaySpec {
    GatewaySpec {
        id,
        name,
        aliases,
        class,
        price_unit,
        needs_token,
    }
}

use DeadlineClass::{Fast, Slow};
use PriceUnit::{PerBillion, PerMillion, PerToken};

/// The built-in gateways, warmed by default (`portkey` is deprecated and not warmed).
pub(crate) const DEFAULT_GATEWAYS: &[GatewaySpec] = &[
    spec("openrouter", "OpenRouter", &[], Fast, PerToken, false),
    spec("featherless", "Featherless", &[], Slow, PerMillion, false),
    spec("chutes", "Chutes", &[], Slow, PerToken, false),
    spec("fireworks", "Fireworks", &[], Fast, PerMillion, false),
    spec("together", "Together", &[], Fast, PerMillion, false),
    spec("groq", "Groq", &[], Fast, PerMillion, false),
    spec("deepinfra", "DeepInfra", &[], Slow, PerToken, false),
    spec("google", "Google", &["google-vertex"], Slow, PerToken, false),
    spec("cerebras", "Cerebras", &[], Slow, PerToken, false),
    spec("nebius", "Nebius", &[], Slow, PerToken, false),
    spec("xai", "xAI", &[], Slow, PerToken, false),
    spec("novita", "Novita", &[], Slow, PerToken, false),
    spec("huggingface", "Hugging Face", &["hug"], Slow, PerToken, true),
    spec("aimo", "AIMO", &[], Slow, PerToken, false),
    spec("near", "NEAR AI", &[], Slow, PerToken, true),
    spec("fal", "fal.ai", &[], Slow, PerToken, false),
    spec("vercel-ai-gateway", "Vercel AI Gateway", &[], Fast, PerToken, false),
    spec("helicone", "Helicone", &[], Slow, PerToken, false),
    spec("alpaca", "Alpaca Network", &[], Slow, PerToken, false),
    spec("alibaba", "Alibaba Cloud", &[], Slow, PerToken, true),
    spec("clarifai", "Clarifai", &[], Slow, PerToken, true),
];

/// Known gateways that are not warmed unless `GATEWAYS` names them.
pub(crate) const OTHER_KNOWN_GATEWAYS: &[GatewaySpec] = &[
    spec("onerouter", "OneRouter", &[], Slow, PerToken, false),
    spec("simplismart", "Simplismart", &[], Slow, PerToken, false),
    spec("aihubmix", "AiHubMix", &[], Slow, PerBillion, false),
    spec("anannas", "Anannas", &[], Slow, PerToken, false),
    spec(
        "cloudflare-workers-ai",
        "Cloudflare Workers AI",
        &[],
        Slow,
        PerToken,
        false,
    ),
    spec("portkey", "Portkey (deprecated)", &[], Slow, PerToken, false),
];

/// A gateway as configured for this deployment.
#[derive(Clone, Debug, Serialize)]
pub struct Gateway {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub class: DeadlineClass,
    pub price_unit: PriceUnit,
    #[serde(skip)]
    pub deadline: Duration,
    pub needs_token: bool,
}

impl Gateway {
    /// A gateway outside any registry (tests, one-off tools): slow class, no aliases.
    pub fn new(id: &str, price_unit: PriceUnit, deadline: Duration) -> Self {
        Gateway {
            id: id.to_string(),
            name: id.to_string(),
            aliases: Vec::new(),
            class: DeadlineClass::Slow,
            price_unit,
            deadline,
            needs_token: false,
        }
    }
}

/// The configured gateways, with alias resolution.
#[derive(Clone, Debug)]
pub(crate) struct Registry {
    gateways: Vec<Gateway>,
}

/// Longest gateway id accepted from a query string.
pub(crate) const MAX_GATEWAY_ID_LEN: usize = 64;

/// Whether `s` has the shape of a gateway id: 1-64 of `[a-z0-9-]` (lowercase).
/// Anything else never reaches the store or the upstream as part of a key.
pub(crate) fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_GATEWAY_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Registry {
    pub(crate) fn from_config(config: &Config) -> Self {
        let known = |id: &str| {
            DEFAULT_GATEWAYS
                .iter()
                .chain(OTHER_KNOWN_GATEWAYS)
                .find(|g| g.id == id)
                .copied()
        };
        let specs: Vec<GatewaySpec> = match &config.gateways {
            None => DEFAULT_GATEWAYS.to_vec(),
            Some(ids) => ids
                .iter()
                .filter(|id| is_valid_id(id))
                .map(|id| {
                    known(id).unwrap_or(GatewaySpec {
                        // Leaked once at start-up: configured ids live for the process.
                        id: Box::leak(id.clone().into_boxed_str()),
                        name: Box::leak(id.clone().into_boxed_str()),
                        aliases: &[],
                        class: Slow,
                        price_unit: PerToken,
                        needs_token: false,
                    })
                })
                .collect(),
        };
        let mut gateways: Vec<Gateway> = Vec::with_capacity(specs.len());
        for s in specs {
            if gateways.iter().any(|g| g.id == s.id) {
                continue;
            }
            gateways.push(Gateway {
                id: s.id.to_string(),
                name: s.name.to_string(),
                aliases: s.aliases.iter().map(|a| a.to_string()).collect(),
                class: s.class,
                price_unit: s.price_unit,
                deadline: match s.class {
                    Fast => config.fast_deadline,
                    Slow => config.slow_deadline,
                },
                needs_token: s.needs_token,
            });
        }
        Registry { gateways }
    }

    pub(crate) fn all(&self) -> &[Gateway] {
        &self.gateways
    }

    pub(crate) fn ids(&self) -> Vec<&str> {
        self.gateways.iter().map(|g| g.id.as_str()).collect()
    }

    /// Find a gateway by id or alias, case-insensitively.
    pub(crate) fn resolve(&self, name: &str) -> Option<&Gateway> {
        let name = name.trim().to_ascii_lowercase();
        self.gateways.iter().find(|g| g.id == name || g.aliases.contains(&name))
    }

    /// The slowest deadline of any gateway: bounds a full warm or a merged-view miss.
    pub(crate) fn max_deadline(&self) -> Duration {
        self.gateways
            .iter()
            .map(|g| g.deadline)
            .max()
            .unwrap_or(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(gateways: Option<&str>) -> Registry {
        let c = match gateways {
            Some(g) => Config::from_pairs(&[("GATEWAYS", g)]),
            None => Config::from_pairs(&[]),
        }
        .unwrap();
        Registry::from_config(&c)
    }

    #[test]
    fn the_built_in_set_by_default_without_portkey() {
        let r = registry(None);
        assert_eq!(r.all().len(), DEFAULT_GATEWAYS.len());
        assert!(r.resolve("portkey").is_none());
    }

    #[test]
    fn every_built_in_gateway_has_a_sample_catalog() {
        // Adding a gateway (docs/design.md): its fixture makes the demo, the tests and
        // the benchmarks serve it.
        for g in DEFAULT_GATEWAYS {
            assert!(
                sample_catalog::FIXTURES.iter().any(|(id, _)| *id == g.id),
                "{} has no fixture in crates/sample-catalog",
                g.id
            );
        }
        assert_eq!(sample_catalog::FIXTURES.len(), DEFAULT_GATEWAYS.len());
    }

    #[test]
    fn aliases_and_case() {
        let r = registry(None);
        assert_eq!(r.resolve("hug").unwrap().id, "huggingface");
        assert_eq!(r.resolve("Google-Vertex").unwrap().id, "google");
        assert_eq!(r.resolve("GROQ").unwrap().id, "groq");
        assert!(r.resolve("nope").is_none());
    }

    #[test]
    fn list_is_configuration() {
        let r = registry(Some("groq, aihubmix,brand-new,../etc,groq"));
        assert_eq!(r.ids(), vec!["groq", "aihubmix", "brand-new"]);
        assert_eq!(r.resolve("aihubmix").unwrap().price_unit, PriceUnit::PerBillion);
        assert_eq!(r.resolve("brand-new").unwrap().class, DeadlineClass::Slow);
    }

    #[test]
    fn deadlines_follow_class() {
        let r = registry(None);
        assert_eq!(r.resolve("groq").unwrap().deadline, Duration::from_secs(5));
        assert_eq!(r.resolve("featherless").unwrap().deadline, Duration::from_secs(30));
    }

    #[test]
    fn id_shape() {
        assert!(is_valid_id("vercel-ai-gateway"));
        for bad in ["", "A", "../x", "a b", "a%2f", &"a".repeat(65), "é"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
