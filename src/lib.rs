//! gatehouse: a standalone authentication and token service.
//!
//! `http` → `service` → `domain`, `crypto`, `storage`: each layer knows only the ones to
//! its right. `startup` wires them together; `main.rs` is the CLI.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod declare;
pub mod domain;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;

/// The layering above, enforced: a lower layer that names `crate::http` or actix-web
/// fails the build's tests, so the doc comment stays true.
#[cfg(test)]
mod layering {
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every line of `layer` that mentions one of `forbidden`, as "file:line: text".
    fn offences(layer: &str, forbidden: &[&str]) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer);
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if forbidden.iter().any(|f| code.contains(f)) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        found
    }

    #[test]
    fn no_layer_below_http_knows_http() {
        for layer in ["service", "domain", "crypto", "storage"] {
            let found = offences(layer, &["crate::http", "actix_web", "actix_"]);
            assert!(
                found.is_empty(),
                "{layer} imports HTTP:\n{}",
                found.join("\n")
            );
        }
    }

    #[test]
    fn the_domain_depends_on_nothing_of_ours() {
        let found = offences(
            "domain",
            &[
                "crate::service",
                "crate::storage",
                "crate::crypto",
                "crate::config",
                "crate::startup",
            ],
        );
        assert!(found.is_empty(), "domain imports:\n{}", found.join("\n"));
    }

    #[test]
    fn the_check_sees_an_offence() {
        // A layer that does import HTTP is reported: the scan itself works.
        assert!(!offences("http", &["actix_web"]).is_empty());
    }
}
