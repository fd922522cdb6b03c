//! Gateways: the registry, the catalog API fetcher, normalisation, and the merged view.

pub mod registry;

pub use registry::{DEFAULT_GATEWAYS, DeadlineClass, Gateway, PriceUnit, Registry};
