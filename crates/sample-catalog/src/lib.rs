//! A local stand-in for the Gatewayz catalog API.
//!
//! Serves the fixture catalogs (shipped in `fixtures/`, compiled in) with the real
//! API's shape and pagination at `GET /v1/models` and `GET /models`, and has knobs
//! per gateway for latency, faults and scale, plus a request counter. Tests,
//! the local demo (`dev-server --demo`) and the benchmarks all use it.
//!
//! Knobs are set in-process through [`Handle`], or over HTTP for other processes:
//! `POST /_control/set?gateway=groq&fault=500&latency_ms=200`, `POST /_control/reset`,
//! `GET /_control/counts`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

/// The fixture catalogs: (gateway id, JSON array of models).
pub const FIXTURES: &[(&str, &str)] = &[
    ("openrouter", include_str!("../fixtures/openrouter.json")),
    ("featherless", include_str!("../fixtures/featherless.json")),
    ("chutes", include_str!("../fixtures/chutes.json")),
    ("fireworks", include_str!("../fixtures/fireworks.json")),
    ("together", include_str!("../fixtures/together.json")),
    ("groq", include_str!("../fixtures/groq.json")),
    ("deepinfra", include_str!("../fixtures/deepinfra.json")),
    ("google", include_str!("../fixtures/google.json")),
    ("cerebras", include_str!("../fixtures/cerebras.json")),
    ("nebius", include_str!("../fixtures/nebius.json")),
    ("xai", include_str!("../fixtures/xai.json")),
    ("novita", include_str!("../fixtures/novita.json")),
    ("huggingface", include_str!("../fixtures/huggingface.json")),
    ("aimo", include_str!("../fixtures/aimo.json")),
    ("near", include_str!("../fixtures/near.json")),
    ("fal", include_str!("../fixtures/fal.json")),
    ("vercel-ai-gateway", include_str!("../fixtures/vercel-ai-gateway.json")),
    ("helicone", include_str!("../fixtures/helicone.json")),
    ("alpaca", include_str!("../fixtures/alpaca.json")),
    ("alibaba", include_str!("../fixtures/alibaba.json")),
    ("clarifai", include_str!("../fixtures/clarifai.json")),
];

/// A misbehaviour to inject for one gateway.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// HTTP 500 with a JSON error body.
    ServerError,
    /// HTTP 502 with an HTML error page (what a proxy in front answers).
    Html,
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// 200 with a JSON body cut in the middle.
    Truncated,
    /// 200 with `data: []`.
    Empty,
    /// 429 with `Retry-After: secs`, for the next `times` requests, then normal.
    RateLimited { retry_after_secs: u64, times: u32 },
    /// 200 with a valid page padded past this many bytes.
    Huge { bytes: usize },
    /// Sends the body a few bytes at a time, forever.
    SlowDrip,
    /// Accepts the request and never answers.
    Hang,
    /// Drops the connection without an answer (the client sees a reset/closed connection).
    Reset,
    /// The pre-pagination API: no `has_more`/`next_offset`, `limit`/`offset` ignored.
    Legacy,
    /// The first page is right; every later page comes back empty while `total` and
    /// `has_more` still describe the whole catalog (a truncated listing).
    ShortPages,
    /// 200 with a `total` that is a string of this many bytes, not a number (a parser's
    /// error message quotes it).
    StringTotal { bytes: usize },
    /// The listing moves while it is paged: each time the first page has been served,
    /// a new model is inserted at the start (for the next `times` first pages; then
    /// the catalog holds still).
    Shifting { times: u32 },
    /// The listing changes while it is paged and keeps its `total`: each time the
    /// first page has been served, its third model is withdrawn and a new one appended
    /// (for the next `times` first pages; then the catalog holds still).
    Swapping { times: u32 },
    /// 404 with a JSON error: the catalog API says the gateway does not exist.
    NotFound,
    /// Replicas at two versions: pages from `from_offset` on come from a version with
    /// the model at index `withdrawn` taken out and another appended (the same
    /// `total`); earlier pages from the catalog as set.
    Replicas { from_offset: usize, withdrawn: usize },
}

#[derive(Clone, Debug, Default)]
struct Knobs {
    fault: Fault,
    latency: Duration,
}

struct State {
    /// Pre-serialized models per gateway.
    catalogs: HashMap<String, Arc<Vec<Bytes>>>,
    knobs: HashMap<String, Knobs>,
    counts: HashMap<String, u64>,
    /// Bytes of the bodies answered per gateway.
    bytes: HashMap<String, u64>,
    /// Bearer tokens a gateway requires (`None` = no auth).
    tokens: HashMap<String, String>,
}

/// A running sample catalog server.
#[derive(Clone)]
pub struct Handle {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Handle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, gateway: &str, fault: Fault) {
        self.lock().knobs.entry(gateway.to_string()).or_default().fault = fault;
    }

    pub fn set_latency(&self, gateway: &str, latency: Duration) {
        self.lock().knobs.entry(gateway.to_string()).or_default().latency = latency;
    }

    /// Require `Authorization: Bearer token` for a gateway.
    pub fn require_token(&self, gateway: &str, token: &str) {
        self.lock().tokens.insert(gateway.to_string(), token.to_string());
    }

    /// Clear all faults and latencies (not the counters).
    pub fn reset_knobs(&self) {
        self.lock().knobs.clear();
    }

    /// Requests received for a gateway (every page counts).
    pub fn requests(&self, gateway: &str) -> u64 {
        self.lock().counts.get(gateway).copied().unwrap_or(0)
    }

    /// Bytes of the bodies answered for `gateway`'s listings.
    pub fn bytes(&self, gateway: &str) -> u64 {
        self.lock().bytes.get(gateway).copied().unwrap_or(0)
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock().bytes.values().sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    pub fn reset_counts(&self) {
        let mut st = self.lock();
        st.counts.clear();
        st.bytes.clear();
    }

    /// Grow (or shrink) a gateway's catalog to `models` entries by cloning fixtures
    /// with new ids: a Featherless-sized catalog is ~18,000.
    pub fn scale(&self, gateway: &str, models: usize) {
        let mut st = self.lock();
        let base = st.catalogs.get(gateway).cloned().unwrap_or_default();
        st.catalogs.insert(gateway.to_string(), Arc::new(scaled(&base, models)));
    }

    /// Replace a gateway's catalog with these models (JSON objects).
    pub fn set_catalog(&self, gateway: &str, models: Vec<serde_json::Value>) {
        let models = models
            .iter()
            .map(|m| Bytes::from(serde_json::to_vec(m).unwrap()))
            .collect();
        self.lock().catalogs.insert(gateway.to_string(), Arc::new(models));
    }

    /// A gateway's catalog now (JSON objects), to change and set again.
    pub fn catalog(&self, gateway: &str) -> Vec<serde_json::Value> {
        let catalog = self.lock().catalogs.get(gateway).cloned().unwrap_or_default();
        catalog.iter().filter_map(|m| serde_json::from_slice(m).ok()).collect()
    }

    pub fn model_count(&self, gateway: &str) -> usize {
        self.lock().catalogs.get(gateway).map(|c| c.len()).unwrap_or(0)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }
}

fn scaled(base: &[Bytes], models: usize) -> Vec<Bytes> {
    if base.is_empty() {
        return Vec::new();
    }
    (0..models)
        .map(|i| {
            let src = &base[i % base.len()];
            let round = i / base.len();
            if round == 0 {
                return src.clone();
            }
            let mut v: serde_json::Value = serde_json::from_slice(src).unwrap();
            for field in ["id", "slug", "canonical_slug", "name"] {
                if let Some(s) = v.get(field).and_then(|s| s.as_str()) {
                    v[field] = serde_json::Value::String(format!("{s}-r{round}"));
                }
            }
            Bytes::from(serde_json::to_vec(&v).unwrap())
        })
        .collect()
}

/// Pre-serialize the fixtures.
fn load_fixtures() -> HashMap<String, Arc<Vec<Bytes>>> {
    FIXTURES
        .iter()
        .map(|(id, json)| {
            let models: Vec<serde_json::Value> = serde_json::from_str(json).expect("fixture is valid JSON");
            let models = models
                .iter()
                .map(|m| Bytes::from(serde_json::to_vec(m).unwrap()))
                .collect();
            (id.to_string(), Arc::new(models))
        })
        .collect()
}

/// Start on `addr` (use port 0 for a free port). The server runs until the
/// runtime shuts down.
pub async fn start(addr: SocketAddr) -> std::io::Result<Handle> {
    let listener = TcpListener::bind(addr).await?;
    let handle = Handle {
        addr: listener.local_addr()?,
        state: Arc::new(Mutex::new(State {
            catalogs: load_fixtures(),
            knobs: HashMap::new(),
            counts: HashMap::new(),
            bytes: HashMap::new(),
            tokens: HashMap::new(),
        })),
    };
    let h = handle.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move {
                        // `None` = the Reset fault: failing the service makes hyper drop
                        // the connection without a response.
                        route(&h, req)
                            .await
                            .ok_or_else(|| std::io::Error::other("injected connection reset"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(handle)
}

/// Start on a free loopback port.
pub async fn start_local() -> Handle {
    start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback")
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn route(h: &Handle, req: Request<hyper::body::Incoming>) -> Option<Response<Body>> {
    let q = query(&req);
    Some(match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/models" | "/models") => return models(h, &req, &q).await,
        ("GET", "/_control/counts") => {
            let counts = h.lock().counts.clone();
            full(StatusCode::OK, "application/json", serde_json::to_vec(&counts).unwrap())
        }
        ("POST", "/_control/reset") => {
            h.reset_knobs();
            h.reset_counts();
            full(StatusCode::OK, "application/json", "{\"ok\":true}")
        }
        ("POST", "/_control/set") => control_set(h, &q),
        _ => full(StatusCode::NOT_FOUND, "application/json", "{\"detail\":\"Not Found\"}"),
    })
}

fn control_set(h: &Handle, q: &HashMap<String, String>) -> Response<Body> {
    let Some(gw) = q.get("gateway") else {
        return full(
            StatusCode::BAD_REQUEST,
            "application/json",
            "{\"error\":\"gateway required\"}",
        );
    };
    if let Some(f) = q.get("fault") {
        let fault = match f.as_str() {
            "none" => Fault::None,
            "500" => Fault::ServerError,
            "html" => Fault::Html,
            "invalid-json" => Fault::InvalidJson,
            "truncated" => Fault::Truncated,
            "empty" => Fault::Empty,
            "429" => Fault::RateLimited {
                retry_after_secs: 1,
                times: u32::MAX,
            },
            "huge" => Fault::Huge { bytes: 80 << 20 },
            "slow-drip" => Fault::SlowDrip,
            "hang" => Fault::Hang,
            "reset" => Fault::Reset,
            "legacy" => Fault::Legacy,
            "404" => Fault::NotFound,
            _ => {
                return full(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    "{\"error\":\"unknown fault\"}",
                );
            }
        };
        h.set_fault(gw, fault);
    }
    if let Some(ms) = q.get("latency_ms").and_then(|v| v.parse().ok()) {
        h.set_latency(gw, Duration::from_millis(ms));
    }
    if let Some(n) = q.get("scale").and_then(|v| v.parse().ok()) {
        h.scale(gw, n);
    }
    full(StatusCode::OK, "application/json", "{\"ok\":true}")
}

async fn models(
    h: &Handle,
    req: &Request<hyper::body::Incoming>,
    q: &HashMap<String, String>,
) -> Option<Response<Body>> {
    if h.lock()
        .knobs
        .get(q.get("gateway").map(String::as_str).unwrap_or("all"))
        .is_some_and(|k| k.fault == Fault::Reset)
    {
        *h.lock()
            .counts
            .entry(q.get("gateway").cloned().unwrap_or_default())
            .or_default() += 1;
        return None;
    }
    Some(models_answer(h, req, q).await)
}

async fn models_answer(
    h: &Handle,
    req: &Request<hyper::body::Incoming>,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let gateway = q
        .get("gateway")
        .cloned()
        .unwrap_or_else(|| "all".into())
        .to_ascii_lowercase();
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return full(
            StatusCode::UNPROCESSABLE_ENTITY,
            "application/json",
            "{\"detail\":\"limit must be between 1 and 1000\"}",
        );
    }

    let (knobs, catalog, token) = {
        let mut st = h.lock();
        *st.counts.entry(gateway.clone()).or_default() += 1;
        // A 429 that runs out turns back into a normal answer.
        let knobs = match st.knobs.get_mut(&gateway) {
            None => Knobs::default(),
            Some(k) => {
                if let Fault::RateLimited { times, .. } = &mut k.fault {
                    if *times == 0 {
                        k.fault = Fault::None;
                    } else {
                        *times -= 1;
                    }
                }
                k.clone()
            }
        };
        let catalog = if gateway == "all" {
            let mut all = Vec::new();
            for (id, _) in FIXTURES {
                all.extend(st.catalogs.get(*id).map(|c| c.as_slice().to_vec()).unwrap_or_default());
            }
            Arc::new(all)
        } else {
            st.catalogs.get(&gateway).cloned().unwrap_or_default()
        };
        (knobs, catalog, st.tokens.get(&gateway).cloned())
    };

    if let Some(token) = token {
        let presented = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        if presented != Some(&format!("Bearer {token}")) {
            return full(
                StatusCode::UNAUTHORIZED,
                "application/json",
                "{\"detail\":\"Invalid API key\"}",
            );
        }
    }

    if !knobs.latency.is_zero() {
        tokio::time::sleep(knobs.latency).await;
    }

    match knobs.fault {
        Fault::ServerError => {
            return full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                "{\"detail\":\"Internal Server Error\"}",
            );
        }
        Fault::Html => {
            return full(
                StatusCode::BAD_GATEWAY,
                "text/html",
                "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
            );
        }
        Fault::InvalidJson => return full(StatusCode::OK, "application/json", "{\"data\": [ {\"id\": oops ]"),
        Fault::RateLimited { retry_after_secs, .. } => {
            let mut r = full(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                "{\"detail\":\"Rate limited\"}",
            );
            r.headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            return r;
        }
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Fault::NotFound => {
            return full(
                StatusCode::NOT_FOUND,
                "application/json",
                "{\"detail\":\"Unknown gateway\"}",
            );
        }
        _ => {}
    }
    // A model withdrawn and another appended once the first page went out: the same
    // `total`, every later model shifted by one.
    if let Fault::Swapping { .. } = knobs.fault
        && offset == 0
    {
        let mut st = h.lock();
        if let Some(Knobs {
            fault: Fault::Swapping { times },
            ..
        }) = st.knobs.get_mut(&gateway)
            && *times > 0
        {
            *times -= 1;
            let mut swapped = st
                .catalogs
                .get(&gateway)
                .map(|c| c.as_slice().to_vec())
                .unwrap_or_default();
            if swapped.len() > 2 {
                swapped.remove(2);
                let n = swapped.len();
                swapped.push(Bytes::from(format!(
                    r#"{{"id":"appended/model-{n}","name":"Appended {n}"}}"#
                )));
            }
            st.catalogs.insert(gateway.clone(), Arc::new(swapped));
        }
    }

    // A model inserted at the start once the first page went out: later pages shift.
    if let Fault::Shifting { .. } = knobs.fault
        && offset == 0
    {
        let mut st = h.lock();
        if let Some(Knobs {
            fault: Fault::Shifting { times },
            ..
        }) = st.knobs.get_mut(&gateway)
            && *times > 0
        {
            *times -= 1;
            let n = st.catalogs.get(&gateway).map_or(0, |c| c.len());
            let mut grown = st
                .catalogs
                .get(&gateway)
                .map(|c| c.as_slice().to_vec())
                .unwrap_or_default();
            grown.insert(
                0,
                Bytes::from(format!(r#"{{"id":"inserted/model-{n}","name":"Inserted {n}"}}"#)),
            );
            st.catalogs.insert(gateway.clone(), Arc::new(grown));
        }
    }
    let other_replica;
    let catalog = match knobs.fault {
        Fault::Replicas { from_offset, withdrawn } if offset >= from_offset && withdrawn < catalog.len() => {
            let mut v = catalog.as_slice().to_vec();
            v.remove(withdrawn);
            let n = v.len();
            v.push(Bytes::from(format!(
                r#"{{"id":"replica/model-{n}","name":"Replica {n}"}}"#
            )));
            other_replica = Arc::new(v);
            &other_replica
        }
        _ => &catalog,
    };
    let legacy = knobs.fault == Fault::Legacy;
    let empty = knobs.fault == Fault::Empty;
    let total = if empty { 0 } else { catalog.len() };
    let (start, end) = if legacy {
        (0, total)
    } else {
        (offset.min(total), (offset + limit).min(total))
    };
    let page = if knobs.fault == Fault::ShortPages && offset > 0 {
        &catalog[0..0]
    } else {
        &catalog[start..end]
    };

    let mut body = Vec::with_capacity(page.iter().map(|m| m.len() + 1).sum::<usize>() + 256);
    body.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, m) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m);
    }
    body.extend_from_slice(b"]");
    let has_more = end < total;
    if legacy {
        body.extend_from_slice(format!(",\"total\":{total},\"gateway\":\"{gateway}\"").as_bytes());
    } else {
        let next = if has_more { end.to_string() } else { "null".into() };
        let total = match knobs.fault {
            // A parser's error quotes the value: ours must not keep it whole.
            Fault::StringTotal { bytes } => format!("\"{}\"", "9".repeat(bytes)),
            _ => total.to_string(),
        };
        body.extend_from_slice(
            format!(
                ",\"total\":{total},\"returned\":{},\"offset\":{offset},\"limit\":{limit},\"has_more\":{has_more},\"next_offset\":{next},\"gateway\":\"{gateway}\"",
                page.len()
            )
            .as_bytes(),
        );
    }
    if let Fault::Huge { bytes } = knobs.fault {
        body.extend_from_slice(b",\"padding\":\"");
        body.resize(body.len() + bytes, b'x');
        body.push(b'"');
    }
    body.extend_from_slice(b",\"note\":\"sample catalog\",\"timestamp\":\"2026-11-24T00:00:00Z\"}");
    *h.lock().bytes.entry(gateway.clone()).or_default() += body.len() as u64;

    match knobs.fault {
        Fault::Truncated => {
            body.truncate(body.len() / 2);
            full(StatusCode::OK, "application/json", body)
        }
        Fault::SlowDrip => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for chunk in body.chunks(16) {
                    if tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(ChannelBody(rx).boxed())
                .unwrap()
        }
        _ => full(StatusCode::OK, "application/json", body),
    }
}

/// An mpsc receiver as a response body (the slow-drip fault).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}
