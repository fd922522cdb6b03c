//! `/api/models`: models JSON for the frontend. All logic lives in `cache_core`.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cache_core::vercel::serve(cache_core::handlers::Route::Models).await
}
