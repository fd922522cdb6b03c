//! `/api/models/feed`: models added, as an Atom feed. All logic lives in `cache_core`.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cache_core::vercel::serve(cache_core::handlers::Route::Feed).await
}
