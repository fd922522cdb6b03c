//! Gateways: the registry, the catalog API fetcher, normalisation, and the merged view.

pub mod fetch;
pub mod merge;
pub mod normalize;
pub mod page;
pub mod registry;

#[cfg(test)]
pub use crate::upstream::FetchError;
pub use fetch::Fetcher;
#[cfg(test)]
pub use registry::PriceUnit;
pub use registry::{DEFAULT_GATEWAYS, Gateway, Registry};
