//! What the console's files are and how they are served.

use super::*;
use reqwest::StatusCode;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
const FILES: &[(&str, &str)] = &[
    ("", "text/html; charset=utf-8"),
    ("index.html", "text/html; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("api.js", "text/javascript; charset=utf-8"),
    ("dom.js", "text/javascript; charset=utf-8"),
    ("pages.js", "text/javascript; charset=utf-8"),
    ("chart.js", "text/javascript; charset=utf-8"),
    ("console.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
];

fn console_file(name: &str) -> String {
    let path = format!("{}/src/http/console/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_console_file_is_served_with_the_strict_csp_and_safe_headers() {
    let app = spawn_app().await;
    for (name, content_type) in FILES {
        let r = app.get(&format!("/admin/{name}")).await;
        assert_eq!(r.status(), StatusCode::OK, "/admin/{name}");
        let h = |n: &str| header(&r, n);
        assert_eq!(
            h("content-type").as_deref(),
            Some(*content_type),
            "/admin/{name}"
        );
        assert_eq!(
            h("content-security-policy").as_deref(),
            Some(CSP),
            "/admin/{name}"
        );
        assert_eq!(
            r.headers()
                .get_all("content-security-policy")
                .iter()
                .count(),
            1,
            "the API's `default-src 'none'` is not sent as a second policy"
        );
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(
            h("cross-origin-opener-policy").as_deref(),
            Some("same-origin")
        );
        assert_eq!(h("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(h("set-cookie"), None, "the console never uses cookies");
    }
    // Metrics count the console by route pattern, not by file name or path.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"route="/admin/{file}""#), "{metrics}");
    assert!(metrics.contains(r#"route="/admin/""#), "{metrics}");
    // The API keeps its own policy.
    let api = app.get("/healthz").await;
    assert_eq!(
        header(&api, "content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
    );
}

#[tokio::test]
async fn the_console_redirects_its_bare_path_and_404s_unknown_files() {
    let app = spawn_app().await;
    let r = app.get("/admin").await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&r, "location").as_deref(), Some("/admin/"));
    for path in [
        "/admin/nope.js",
        "/admin/..%2fCargo.toml",
        "/admin/console.rs",
    ] {
        assert_error(app.get(path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let r = app
        .api_client
        .post(app.url("/admin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_console_files_are_rate_limited_like_reads() {
    let app = spawn_app_with(|s| {
        s.rate_limits.enabled = true;
        s.rate_limits.reads = gatehouse::config::Tier {
            per_minute: 1,
            burst: 2,
        };
    })
    .await;
    assert_eq!(app.get("/admin/").await.status(), StatusCode::OK);
    assert_eq!(app.get("/admin/app.js").await.status(), StatusCode::OK);
    let limited = app.get("/admin/api.js").await;
    assert!(header(&limited, "retry-after").is_some());
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn gatehouse_admin_console_off_serves_nothing_under_admin() {
    let app = spawn_app_with(|s| s.http.admin_console = false).await;
    for (name, _) in FILES {
        let r = app.get(&format!("/admin/{name}")).await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_error(app.get("/admin").await, StatusCode::NOT_FOUND, "not_found").await;
    // The API the console would have used still answers.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_console_files_keep_tokens_in_memory_and_data_out_of_html() {
    let html = console_file("index.html");
    assert!(!html.contains("style="), "no inline style in index.html");
    assert!(
        html.matches("<script").count() == html.matches("<script type=\"module\" src=").count(),
        "every script is a file"
    );
    assert!(!html.contains(" on"), "no inline event handlers: {html}");
    for name in ["app.js", "api.js", "dom.js", "pages.js", "chart.js"] {
        // The SVG namespace is a name, not an address anything is fetched from.
        let js = console_file(name).replace("\"http://www.w3.org/2000/svg\"", "");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
            "eval(",
            "http://",
            "https://",
        ] {
            assert!(!js.contains(banned), "{name} uses {banned}");
        }
    }
    let css = console_file("console.css");
    assert!(
        !css.contains("@import") && !css.contains("url("),
        "the CSS fetches nothing"
    );
}
