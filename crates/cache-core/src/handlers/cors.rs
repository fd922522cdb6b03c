//! CORS for the read routes, so a frontend on another origin can fetch them.
//!
//! `CORS_ALLOW_ORIGINS`: comma-separated exact origins, or `*` when set explicitly;
//! unset = no CORS headers at all. Only `GET`/`HEAD` (the models JSON and the warm
//! status) are ever allowed cross-origin; the warm `POST` and the cron route never
//! are. `Vary: Origin` is always sent when CORS is configured, so a CDN never serves
//! one origin's answer to another.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::Route;

use crate::body::Body;
use crate::config::CorsPolicy;

/// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
fn allow(policy: &CorsPolicy, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match policy {
        CorsPolicy::Off => None,
        CorsPolicy::Any => Some(HeaderValue::from_static("*")),
        CorsPolicy::Origins(list) => {
            let origin = origin?;
            let o = origin.to_str().ok()?;
            list.iter().any(|a| a == o).then(|| origin.clone())
        }
    }
}

/// Read routes that may be fetched cross-origin.
fn cross_origin_route(route: Route) -> bool {
    matches!(route, Route::Models | Route::WarmModels | Route::Changes | Route::Feed)
}

/// Headers the page reads from responses.
const EXPOSE: &str =
    "ETag, X-Cache, X-Cache-Age, X-Model-Count, X-Cache-Fail-Safe, X-Cache-Fail-Safe-Reason, X-Cache-Carried";

/// Answer a preflight (`OPTIONS`) for `route`.
pub(crate) fn preflight(route: Route, headers: &HeaderMap, policy: &CorsPolicy) -> Response<Body> {
    let mut r = Response::builder().status(StatusCode::NO_CONTENT);
    let h = r.headers_mut().expect("fresh builder");
    h.insert(header::ALLOW, HeaderValue::from_static(allow_methods(route)));
    if *policy != CorsPolicy::Off {
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    let wants = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .unwrap_or("GET");
    let safe = wants == "GET" || wants == "HEAD";
    if cross_origin_route(route)
        && safe
        && let Some(origin) = allow(policy, headers.get(header::ORIGIN))
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("If-None-Match, Accept, Content-Type"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    r.body(Body::empty()).expect("valid")
}

/// Add CORS headers to an actual response.
pub(crate) fn decorate(
    route: Route,
    method: &Method,
    origin: Option<&HeaderValue>,
    policy: &CorsPolicy,
    response: &mut Response<Body>,
) {
    if *policy == CorsPolicy::Off {
        return;
    }
    let h = response.headers_mut();
    match h.get(header::VARY).and_then(|v| v.to_str().ok()) {
        Some(v) if !v.to_ascii_lowercase().contains("origin") => {
            let combined = format!("{v}, Origin");
            h.insert(header::VARY, HeaderValue::from_str(&combined).expect("ascii"));
        }
        Some(_) => {}
        None => {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    let read = *method == Method::GET || *method == Method::HEAD;
    if cross_origin_route(route)
        && read
        && let Some(allowed) = allow(policy, origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
    }
}

fn allow_methods(route: Route) -> &'static str {
    match route {
        Route::Models | Route::Changes | Route::Feed => "GET, HEAD, OPTIONS",
        Route::WarmModels => "GET, HEAD, POST, OPTIONS",
        Route::CronWarmCache => "GET",
        Route::Page => "GET, HEAD",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(o: &str) -> HeaderValue {
        HeaderValue::from_str(o).unwrap()
    }

    #[test]
    fn parse() {
        assert_eq!(CorsPolicy::parse(None), CorsPolicy::Off);
        assert_eq!(CorsPolicy::parse(Some(" ")), CorsPolicy::Off);
        assert_eq!(CorsPolicy::parse(Some("*")), CorsPolicy::Any);
        assert_eq!(
            CorsPolicy::parse(Some("https://gatewayz.ai/, https://beta.gatewayz.ai")),
            CorsPolicy::Origins(vec!["https://gatewayz.ai".into(), "https://beta.gatewayz.ai".into()])
        );
    }

    #[test]
    fn exact_origins_only_on_reads() {
        let p = CorsPolicy::parse(Some("https://gatewayz.ai"));
        let mut r = Response::new(Body::empty());
        decorate(
            Route::Models,
            &Method::GET,
            Some(&origin("https://gatewayz.ai")),
            &p,
            &mut r,
        );
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://gatewayz.ai");
        assert_eq!(r.headers()[header::VARY], "Origin");
        for (route, method, o) in [
            (Route::Models, Method::GET, "https://gatewayz.ai.evil.com"),
            (Route::Models, Method::GET, "http://gatewayz.ai"),
            (Route::WarmModels, Method::POST, "https://gatewayz.ai"),
            (Route::CronWarmCache, Method::GET, "https://gatewayz.ai"),
        ] {
            let mut r = Response::new(Body::empty());
            decorate(route, &method, Some(&origin(o)), &p, &mut r);
            assert!(
                r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{route:?} {method} {o}"
            );
        }
    }
}
