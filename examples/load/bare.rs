//! The bare actix-web baseline of the JWKS ratio: the same bytes from one handler, in a
//! process of its own.

use std::net::TcpListener;
use std::path::Path;

use anyhow::Context as _;

use crate::Args;

/// The baseline's HTTP workers: `--bare-workers`, else the spawned server's
/// GATEHOUSE_HTTP_WORKERS, else one per core (gatehouse's default), so that both
/// sides of the ratio have the same number.
pub(crate) fn workers(args: &Args) -> usize {
    args.bare_workers
        .or_else(|| {
            args.env
                .iter()
                .find_map(|kv| kv.strip_prefix("GATEHOUSE_HTTP_WORKERS="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// `--serve-bare`), answering every request with `body`; returns it and its URL.
pub(crate) async fn start(
    body: &[u8],
    workers: usize,
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt as _;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), body)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-bare")
        .arg(file.path())
        .arg("--bare-workers")
        .arg(workers.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("bare server stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    let port: u16 = line
        .trim()
        .parse()
        .with_context(|| format!("bare server said {line:?}"))?;
    drop(file);
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// The bare baseline itself: the JWKS bytes from one handler, nothing else (no
/// middleware, no headers beyond the content type), `workers` HTTP workers.
pub(crate) fn serve(body: &Path, workers: usize) -> anyhow::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let body = bytes::Bytes::from(std::fs::read(body)?);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().default_service(web::to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}
