//! The benchmark's ceiling: an actix-web server that answers every request with the
//! same bytes from memory (a captured page), with the headers a cache hit carries. It
//! shows what this machine allows, so cache-hit figures can be read as ratios of it.
//!
//! Usage: `ceiling BIND FILE [CONTENT_TYPE]`; workers as for the app (`WORKERS`).

use actix_web::web::{Bytes, Data};
use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ceiling BIND FILE [CONTENT_TYPE]";
    let bind = args.next().expect(usage);
    let file = args.next().expect(usage);
    let content_type = args
        .next()
        .unwrap_or_else(|| "text/html; charset=utf-8".into());
    let body = Data::new((Bytes::from(std::fs::read(&file)?), content_type));
    let mut server = HttpServer::new(move || {
        App::new().app_data(body.clone()).default_service(web::to(
            |body: Data<(Bytes, String)>| async move {
                HttpResponse::Ok()
                    .insert_header(("Content-Type", body.1.as_str()))
                    .insert_header(("ETag", "\"ceiling\""))
                    .insert_header(("Cache-Control", "no-cache"))
                    .insert_header(("X-Cache", "HIT"))
                    .body(body.0.clone())
            },
        ))
    })
    .bind(&bind)?;
    if let Some(n) = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()) {
        server = server.workers(n);
    }
    server.run().await
}
