//! The layering of lib.rs, enforced over the module graph as Rust reads it: every `use`
//! tree (grouped, renamed, glob), every path in code and the paths inside macro calls,
//! with `crate::`, `super::` and `self::` resolved against the module each file is.
//! Spelling cannot hide an import from it, as it could from a text search.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The crate's top-level modules that only `startup` and the CLI may know, with them.
const TOP: [&str; 3] = ["config", "startup", "cli"];

/// Why `from` may not import `to` (both top-level module names), or `None`.
fn forbidden(from: &str, to: &str) -> Option<&'static str> {
    if from == to || TOP.contains(&from) {
        return None;
    }
    if TOP.contains(&to) {
        return Some("only startup and the CLI see the whole configuration");
    }
    let below_http = ["service", "storage", "crypto", "domain"];
    if below_http.contains(&from) && to == "http" {
        return Some("nothing below http knows HTTP");
    }
    if from == "storage" && to == "service" {
        return Some("the service uses storage, never the reverse");
    }
    if from == "domain" {
        return Some("the domain depends on nothing of ours");
    }
    None
}

/// Every path one file names, resolved to crate-absolute segments where it is ours.
struct Paths<'a> {
    /// The module being read, from the crate root (`["service", "lockout"]`).
    module: Vec<String>,
    /// The crate's top-level modules, for bare paths in the crate root.
    roots: &'a BTreeSet<String>,
    found: Vec<Vec<String>>,
}

impl Paths<'_> {
    /// `segments` as written in `self.module`; `None` when it is not a path of ours.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?.as_str();
        let (mut base, mut rest) = match first {
            "crate" => (Vec::new(), &segments[1..]),
            "self" | "super" => (self.module.clone(), segments),
            // In the crate root, `http::…` is the crate's own module (2018 paths).
            name if self.module.is_empty() && self.roots.contains(name) => (Vec::new(), segments),
            // A child module (same layer), a local name or another crate.
            _ => return None,
        };
        while let Some((head, tail)) = rest.split_first() {
            match head.as_str() {
                "self" => {}
                "super" => {
                    base.pop();
                }
                _ => break,
            }
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn add(&mut self, segments: Vec<String>) {
        if let Some(path) = self.resolve(&segments) {
            self.found.push(path);
        }
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut prefix = prefix;
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix;
                path.push(n.ident.to_string());
                self.add(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix;
                path.push(r.ident.to_string());
                self.add(path);
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix.clone(), tree);
                }
            }
        }
    }

    /// Macro arguments are tokens, not syntax: any `crate`/`self`/`super` followed by
    /// `::name` pairs in them is a path.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if ["crate", "self", "super"].contains(&&*id.to_string()) => {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        let Some(TokenTree::Ident(next)) = tokens.get(j + 2) else {
                            break;
                        };
                        path.push(next.to_string());
                        j += 3;
                    }
                    if path.len() > 1 {
                        self.add(path);
                    }
                    i = j.max(i + 1) - 1;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        // `::name` is always another crate.
        if u.leading_colon.is_none() {
            self.use_tree(Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            self.add(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }
}

/// The imports of `source`, read as module `module`, that break the layering, as
/// "module -> path: reason".
fn offences(
    module: &[&str],
    source: &str,
    roots: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let file = syn::parse_file(source).map_err(|e| e.to_string())?;
    let mut paths = Paths {
        module: module.iter().map(|s| s.to_string()).collect(),
        roots,
        found: Vec::new(),
    };
    paths.visit_file(&file);
    let Some(from) = module.first() else {
        return Ok(Vec::new());
    };
    Ok(paths
        .found
        .iter()
        .filter_map(|path| {
            let to = path.first()?;
            let why = forbidden(from, to)?;
            Some(format!(
                "{} -> {}: {why}",
                module.join("::"),
                path.join("::")
            ))
        })
        .collect())
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The module a file under src/ is: `service/mod.rs` is `service`, `http/limiter/memory.rs`
/// is `http::limiter::memory`, `lib.rs` the root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

fn roots() -> BTreeSet<String> {
    [
        "cli",
        "clock",
        "config",
        "crypto",
        "declare",
        "domain",
        "http",
        "memory",
        "metrics",
        "service",
        "startup",
        "storage",
        "telemetry",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[test]
fn the_module_graph_points_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files).expect("read src");
    let roots = roots();
    let mut found = Vec::new();
    let mut read = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        // The binary reaches the library as `gatehouse::`, another crate.
        if relative == Path::new("main.rs") {
            continue;
        }
        let module = module_of(relative);
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        let text = std::fs::read_to_string(file).expect("read source");
        found.extend(
            offences(&module, &text, &roots)
                .unwrap_or_else(|e| panic!("{}: {e}", relative.display())),
        );
        read += 1;
    }
    assert!(read > 40, "read only {read} files");
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

/// Each form an import can take is seen, in a snippet planted in each layer.
#[test]
fn every_form_of_a_forbidden_import_is_caught() {
    let roots = roots();
    let planted: &[(&[&str], &str)] = &[
        (&["service", "lockout"], "use crate::http::client_ip::Cidr;"),
        (
            &["service"],
            "use crate::{domain::Email, http::limiter::Tier};",
        ),
        (&["crypto", "keys"], "use crate::{self as c, config};"),
        (
            &["service", "tokens"],
            "use super::super::config::Settings;",
        ),
        (&["service"], "use super::http::settings::HttpSettings;"),
        (
            &["storage", "sqlite"],
            "use crate::service::ServiceError as E;",
        ),
        (&["storage"], "use crate::service::*;"),
        (&["domain", "email"], "use crate::crypto::constant_time_eq;"),
        (&["domain"], "use crate::clock::Clock;"),
        (&["http", "me"], "use crate::config::Settings;"),
        (&["service"], "fn f(s: &crate::config::Settings) {}"),
        (
            &["crypto"],
            "fn f() { let _ = crate::http::MAX_BODY_BYTES; }",
        ),
        (
            &["storage"],
            "fn f() { tracing::info!(x = ?crate::service::ServiceError::NotFound); }",
        ),
        (
            &["service", "admin"],
            "mod inner { use super::super::super::http::dto; }",
        ),
        (
            &["service"],
            "mod inner { fn f() -> self::super::super::config::Settings {} }",
        ),
    ];
    for (module, source) in planted {
        let found = offences(module, source, &roots).expect("parses");
        assert!(
            !found.is_empty(),
            "not caught in {}: {source}",
            module.join("::")
        );
    }
    // Allowed forms stay allowed: lower layers, a child module, another crate, and the
    // top using anything.
    let allowed: &[(&[&str], &str)] = &[
        (
            &["service"],
            "use crate::{domain::Email, storage::Store, crypto::keys};",
        ),
        (
            &["http", "limiter"],
            "use self::memory::X; use super::settings::HttpSettings;",
        ),
        (
            &["storage"],
            "use ::config::Thing; use http::Request; use crate::domain::Email;",
        ),
        (&["config"], "use crate::http::settings::HttpSettings;"),
        (
            &["startup"],
            "use crate::{config::Settings, http, service::AppState};",
        ),
        (
            &["domain", "email"],
            "use std::fmt; use super::ids::UserId;",
        ),
    ];
    for (module, source) in allowed {
        let found = offences(module, source, &roots).expect("parses");
        assert!(
            found.is_empty(),
            "{}: {source}: {found:?}",
            module.join("::")
        );
    }
}
