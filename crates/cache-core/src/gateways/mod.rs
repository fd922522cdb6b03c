//! Gateways: the registry, the catalog API fetcher, normalisation, and the merged view.

pub(crate) mod fetch;
pub(crate) mod merge;
pub(crate) mod normalize;
pub(crate) mod page;
pub(crate) mod registry;

#[cfg(test)]
pub(crate) use crate::upstream::FetchError;
pub(crate) use fetch::Fetcher;
pub use registry::Gateway;
#[cfg(test)]
pub(crate) use registry::PriceUnit;
pub(crate) use registry::{DEFAULT_GATEWAYS, Registry};
