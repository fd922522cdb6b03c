//! The deployment layout: every `api/**/*.rs` is a Vercel function with its own
//! `[[bin]]` in the root Cargo.toml, and vercel.json names only routes that exist.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn api_files(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            api_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

/// `[[bin]]` sections of Cargo.toml as (name, path).
fn bins() -> Vec<(String, String)> {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["bin"]
        .as_array()
        .expect("[[bin]] sections")
        .iter()
        .map(|b| {
            let field = |k: &str| {
                b.get(k)
                    .and_then(toml::Value::as_str)
                    .unwrap_or_else(|| panic!("[[bin]] without {k}"))
                    .to_string()
            };
            (field("name"), field("path"))
        })
        .collect()
}

#[test]
fn every_api_file_has_a_uniquely_named_bin() {
    let mut files = Vec::new();
    api_files(&root().join("api"), &mut files);
    let bins = bins();
    for f in &files {
        assert!(bins.iter().any(|(_, p)| p == f), "{f} has no [[bin]] in Cargo.toml");
    }
    let mut names: Vec<_> = bins.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), bins.len(), "bin names are unique");
    for (name, path) in [
        ("models", "api/models.rs"),
        ("cache-warm-models", "api/cache/warm-models.rs"),
        ("cron-warm-cache", "api/cron/warm-cache.rs"),
        ("page", "api/page.rs"),
    ] {
        assert!(
            bins.contains(&(name.to_string(), path.to_string())),
            "contract: binary {name} at {path}"
        );
    }
}

#[test]
fn vercel_json_names_existing_routes() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("vercel.json")).unwrap()).unwrap();
    for (file, cfg) in v["functions"].as_object().unwrap() {
        assert!(root().join(file).is_file(), "functions names missing {file}");
        assert!(cfg["maxDuration"].as_u64().unwrap() <= 800);
    }
    let crons = v["crons"].as_array().unwrap();
    assert_eq!(crons.len(), 1);
    assert_eq!(crons[0]["path"], "/api/cron/warm-cache");
    assert_eq!(crons[0]["schedule"], "0 */3 * * *");
    let route_file = format!("{}.rs", crons[0]["path"].as_str().unwrap().trim_start_matches('/'));
    assert!(root().join(&route_file).is_file(), "cron path {route_file} exists");
    assert!(
        v["functions"][&route_file]["maxDuration"].as_u64().unwrap() >= 300,
        "warm routes get a long maxDuration"
    );
}

#[test]
fn the_warm_lock_outlives_the_warm_routes_but_not_by_much() {
    // A warm killed at maxDuration must not block the next one for long, and a live
    // warm must never lose its lock: maxDuration < lock TTL <= maxDuration + 60 s.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("vercel.json")).unwrap()).unwrap();
    let ttl = cache_core::config::Config::from_pairs(&[])
        .unwrap()
        .warm_lock_ttl
        .as_secs();
    for route in ["api/cache/warm-models.rs", "api/cron/warm-cache.rs"] {
        let max = v["functions"][route]["maxDuration"].as_u64().unwrap();
        assert!(
            max < ttl && ttl <= max + 60,
            "{route}: maxDuration {max} s vs WARM_LOCK_TTL_SECONDS default {ttl} s"
        );
    }
}

#[test]
fn the_status_page_knows_the_cron_schedule_and_is_routed() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("vercel.json")).unwrap()).unwrap();
    let schedule = v["crons"][0]["schedule"].as_str().unwrap();
    let page = std::fs::read_to_string(root().join("public/status.html")).unwrap();
    assert!(
        page.contains(&format!("<meta name=\"gatewayz-cron\" content=\"{schedule}\">")),
        "public/status.html's gatewayz-cron meta must equal vercel.json's schedule {schedule}"
    );
    let rewrites = v["rewrites"].as_array().unwrap();
    assert!(
        rewrites
            .iter()
            .any(|r| r["source"] == "/status" && r["destination"] == "/status.html")
    );
}

#[test]
fn the_pages_are_served_with_a_csp_and_nosniff() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("vercel.json")).unwrap()).unwrap();
    let rule = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["source"] == "/(.*)")
        .expect("a headers rule for every path (the pages, and the JSON too)");
    let header = |k: &str| {
        rule["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == k)
            .and_then(|h| h["value"].as_str())
            .unwrap_or_else(|| panic!("{k} missing"))
            .to_string()
    };
    assert_eq!(header("X-Content-Type-Options"), "nosniff");
    let csp = header("Content-Security-Policy");
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    // The page route sends the same policy; the dev server too, plus local API
    // origins for ?api=. Scripts are files: no inline script anywhere.
    assert_eq!(
        cache_core::handlers::PAGE_CSP,
        csp,
        "vercel.json and the page route send the same CSP"
    );
    let local = dev_server::PAGE_CSP.replace(" http://127.0.0.1:* http://localhost:*", "");
    assert_eq!(local, csp, "vercel.json and the dev server send the same CSP");
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("script-src 'self' 'unsafe-inline'"),
        "{csp}"
    );
    let status = std::fs::read_to_string(root().join("public/status.html")).unwrap();
    assert!(
        !status.contains("<script>") && !status.contains("<script type"),
        "public/status.html: no inline script"
    );
    // Styles: files, or the models page's one <style>, by its hash; never 'unsafe-inline'
    // (which would let an injected style attribute through), and no style attribute in
    // the pages' markup or scripts (the status page sets widths through the CSSOM).
    assert!(!csp.contains("'unsafe-inline'"), "{csp}");
    let hash = sha256_base64(&std::fs::read(root().join("public/models.css")).unwrap());
    assert!(
        csp.contains(&format!("style-src 'self' 'sha256-{hash}';")),
        "the CSP must allow the inlined public/models.css by its hash: 'sha256-{hash}' (in vercel.json, handlers/page.rs and the dev server)"
    );
    for file in ["public/status.html", "public/status.js", "public/models.js"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            !text.contains("style=\""),
            "{file}: a style attribute, which the CSP blocks"
        );
    }
}

/// SHA-256 of `data`, base64 (what a CSP hash source holds), by the system's `sha256sum`.
fn sha256_base64(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&out[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for k in 0..4 {
            b64.push(match k <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    b64
}

#[test]
fn the_models_page_is_a_function_not_a_static_file() {
    // The filesystem answers before rewrites on Vercel: a static file at / or /models
    // would hide the page route.
    for file in ["public/index.html", "public/models.html", "public/models"] {
        assert!(
            !root().join(file).exists(),
            "{file} would answer before the page function"
        );
    }
    for file in [
        "public/api-base.js",
        "public/models.js",
        "public/models.css",
        "public/status.js",
        "public/status.css",
    ] {
        assert!(root().join(file).is_file(), "{file} is served statically");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("vercel.json")).unwrap()).unwrap();
    for source in ["/", "/models"] {
        assert!(
            v["rewrites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["source"] == source && r["destination"] == "/api/page"),
            "{source} is rewritten to the page function"
        );
    }
    assert!(v["functions"]["api/page.rs"].is_object());
}

#[test]
fn deployment_files_pin_the_toolchain_and_keep_secrets_out() {
    let toolchain = std::fs::read_to_string(root().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .expect("a channel")
        .trim_start_matches([' ', '='])
        .trim()
        .trim_matches('"');
    assert!(
        channel.split('.').count() == 3 && channel.split('.').all(|p| p.parse::<u32>().is_ok()),
        "rust-toolchain.toml pins an exact version, not {channel:?}"
    );
    let ignore = std::fs::read_to_string(root().join(".vercelignore")).expect(".vercelignore exists");
    for must in ["/target", ".env", ".env.*"] {
        assert!(
            ignore.lines().any(|l| l.trim() == must),
            ".vercelignore excludes {must}"
        );
    }
}

/// cache-core's modules form layers: the graph of `crate::<module>` references
/// between top-level modules (comments and test code left out) has no cycle, so no
/// module imports one that imports it back (docs/design.md has the picture).
#[test]
fn cache_core_modules_only_point_down() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = root().join("crates/cache-core/src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|x| x == "rs")).then_some(name)
        })
        .filter(|m| m != "lib" && m != "tests")
        .collect();
    let mut files = Vec::new();
    api_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.trim_start_matches("crates/cache-core/src/");
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if !modules.contains(&module) || rel.contains("/tests/") || rel.ends_with("/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != module {
                    graph.entry(module.clone()).or_default().insert(name);
                }
            }
        }
    }
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from.to_string()]);
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(m, deps)| {
            deps.iter()
                .filter(|d| reaches(d, m))
                .map(move |d| format!("{m} -> {d}"))
        })
        .collect();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    assert!(cycles.is_empty(), "these imports point back up: {cycles:?}");
}
