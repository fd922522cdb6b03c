//! `/api/models/changes`: what changed in the gateways' catalogs. All logic lives in `cache_core`.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cache_core::vercel::serve(cache_core::handlers::Route::Changes).await
}
