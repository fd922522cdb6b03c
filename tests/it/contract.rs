//! The typed contract: the committed JSON Schemas (`schema/`) and TypeScript
//! declarations (`types/`) are what the Rust types make today.
//!
//! After changing `crates/cache-core/src/contract.rs`:
//! `UPDATE_CONTRACT=1 cargo test --test it contract::`, then commit the files.
//! (Served responses are validated against these schemas in `tests/it/http_e2e.rs`.)

use std::path::Path;

#[test]
fn committed_contract_files_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_CONTRACT").is_some();
    let mut drifted = Vec::new();
    for (path, want) in cache_core::contract::generated_files() {
        let file = root.join(path);
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        if have != want {
            drifted.push(path);
        }
    }
    assert!(
        drifted.is_empty(),
        "{drifted:?} drifted from crates/cache-core/src/contract.rs: run `UPDATE_CONTRACT=1 cargo test --test it contract::` and commit them"
    );
}
