//! Test attributes for the HTTP suite (`tests/api`): one test body, run on each storage
//! backend, in one test binary.
//!
//! ```ignore
//! #[both_backends]                                  // or (flavor = "multi_thread", ...)
//! async fn a_refresh_token_is_spent_once() { let app = spawn_app().await; ... }
//! ```
//!
//! expands to the body, unchanged, as a plain `async fn a_refresh_token_is_spent_once`,
//! and a module of the same name with one `#[tokio::test]` per backend:
//! `a_refresh_token_is_spent_once::sqlite` and `a_refresh_token_is_spent_once::postgres`.
//! Each runs the body inside `crate::kit::app::Backend::scope`, which is what
//! `spawn_app()` consults first, so the body never says which backend it is on.
//!
//! An attribute rather than a `macro_rules!` around whole files: the bodies stay ordinary
//! items that rustfmt formats and that compile errors point into.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{ItemFn, parse_macro_input};

/// Runs the async test once on SQLite and once on PostgreSQL. Arguments are
/// `#[tokio::test]`'s (`flavor = "multi_thread", worker_threads = 4`).
#[proc_macro_attribute]
pub fn both_backends(args: TokenStream, item: TokenStream) -> TokenStream {
    let body = parse_macro_input!(item as ItemFn);
    expand(args.into(), body, &["Sqlite", "Postgres"])
}

fn expand(args: TokenStream2, mut body: ItemFn, backends: &[&str]) -> TokenStream {
    if body.sig.asyncness.is_none() || !body.sig.inputs.is_empty() {
        return syn::Error::new_spanned(
            &body.sig,
            "a test run per backend is an `async fn` without arguments",
        )
        .to_compile_error()
        .into();
    }
    // What libtest reads belongs on each generated test; everything else (docs, lint
    // allowances) stays with the body.
    let (for_tests, for_body) = body.attrs.drain(..).partition::<Vec<_>, _>(|attr| {
        ["ignore", "should_panic"]
            .iter()
            .any(|name| attr.path().is_ident(name))
    });
    body.attrs = for_body;
    let name = &body.sig.ident;
    let output = &body.sig.output;
    // A fn and a module may share a name (value and type namespaces), so the test's path
    // reads `<name>::<backend>` and the body keeps its name for `super::<name>()`.
    let tokio_test = if args.is_empty() {
        quote!(#[::tokio::test])
    } else {
        quote!(#[::tokio::test(#args)])
    };
    let tests = backends.iter().map(|backend| {
        let variant = format_ident!("{backend}");
        let test = format_ident!("{}", backend.to_lowercase());
        quote! {
            #tokio_test
            #(#for_tests)*
            async fn #test() #output {
                crate::kit::app::Backend::#variant.scope(super::#name()).await
            }
        }
    });
    quote! {
        #body

        mod #name {
            #(#tests)*
        }
    }
    .into()
}
