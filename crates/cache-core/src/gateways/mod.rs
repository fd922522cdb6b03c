//! Gateways: the registry, the catalog API fetcher, normalisation, and the merged view.

pub mod fetch;
pub mod merge;
pub mod normalize;
pub mod page;
pub mod registry;

pub use fetch::{FetchError, Fetcher};
pub use registry::{DEFAULT_GATEWAYS, DeadlineClass, Gateway, PriceUnit, Registry};
