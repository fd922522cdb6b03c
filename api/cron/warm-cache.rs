//! `/api/cron/warm-cache`: the Vercel Cron entry. All logic lives in `cache_core`.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cache_core::vercel::serve(cache_core::handlers::Route::CronWarmCache).await
}
