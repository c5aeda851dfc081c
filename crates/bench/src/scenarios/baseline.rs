//! The floor for ingest: an HTTP server on the same stack (axum, tokio) that only reads the
//! body and answers, with no parsing, no authentication and no storage.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let app = Router::new().route(
        "/hooks/gitlab",
        post(|body: Bytes| async move {
            axum::Json(serde_json::json!({"status": "accepted", "bytes": body.len()}))
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}
