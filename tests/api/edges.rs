//! Hardening at the edges (issue #10): what clients choose (methods, paths, addresses,
//! forwarded headers) must not grow the server's state or loosen its limits.

use std::collections::BTreeSet;

use futures::future::join_all;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

/// Every series `/metrics` shows (name and labels), without the values.
async fn metric_series(app: &TestApp) -> BTreeSet<String> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("metrics body");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

async fn send_made_up(app: &TestApp, round: usize, count: usize) {
    let requests = (0..count).map(|i| {
        let n = round * count + i;
        let method = Method::from_bytes(format!("MADEUP{n}").as_bytes()).expect("a token");
        let path = match n % 3 {
            0 => format!("/made/up/{n}"),
            1 => "/v1/login".to_owned(),
            _ => "/healthz".to_owned(),
        };
        app.api_client.request(method, app.url(&path)).send()
    });
    for response in join_all(requests).await {
        let status = response.expect("request").status();
        assert!(status.is_client_error(), "{status}");
    }
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metrics_series() {
    let app = spawn_app().await;
    // A first round of each shape, and a first scrape, create the series they may.
    send_made_up(&app, 0, 6).await;
    metric_series(&app).await;
    let before = metric_series(&app).await;

    for round in 1..=10 {
        send_made_up(&app, round, 100).await;
    }

    let after = metric_series(&app).await;
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "{} series added by made-up methods and paths, e.g. {:?}",
        added.len(),
        &added[..added.len().min(3)]
    );
    let text = app.get("/metrics").await.text().await.expect("body");
    assert!(
        text.contains(r#"route="unmatched",method="other""#),
        "made-up requests are counted under one label:\n{text}"
    );
}
