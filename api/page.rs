//! `/api/page`, where vercel.json rewrites `/` and `/models`: the models page, its first screen in the HTML. All logic lives in `cache_core`.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cache_core::vercel::serve(cache_core::handlers::Route::Page).await
}
