//! A deadline for reading a request body. actix-web answers slow *headers* with 408
//! (`client_request_timeout`, 5 s) but has no such limit for the body, so a client
//! sending a form a few bytes at a time could hold a connection for minutes. Every
//! request that may carry a body gets its payload cut off `BODY_TIMEOUT` after it
//! reached the app; whatever was reading it (the form extractors) fails, and the answer
//! is a 408 page and a closed connection, whichever route it was.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::AppError;

/// As long as actix gives a client for its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// For a `multipart/form-data` body (a listing form with photos: up to 120 MB, and the
/// server re-encodes each photo before it reads the next, waiting for a photo thread).
/// Only a signed-in admin's form is read at all: other requests are refused first.
pub const UPLOAD_BODY_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn body_timeout(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    // No handler reads the body of a GET or HEAD; leave those requests untouched.
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.call(req).await.map(|res| res.map_into_left_body());
    }
    let timed_out = Rc::new(Cell::new(false));
    let multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    let limit = if multipart {
        UPLOAD_BODY_TIMEOUT
    } else {
        BODY_TIMEOUT
    };
    let payload = with_deadline(
        req.take_payload(),
        Instant::now() + limit,
        timed_out.clone(),
    );
    req.set_payload(payload);
    let res = next.call(req).await?;
    if timed_out.get() {
        log::info!("408: request body not received within {limit:?}");
        return Ok(res
            .error_response(AppError::RequestTimeout)
            .map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// `payload`, ending with an error (and setting `timed_out`) at `deadline`.
fn with_deadline(payload: Payload, deadline: Instant, timed_out: Rc<Cell<bool>>) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |payload| {
        let timed_out = timed_out.clone();
        async move {
            let mut payload = payload?;
            match tokio::time::timeout_at(deadline, payload.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(payload))),
                Ok(None) => None,
                Err(_) => {
                    timed_out.set(true);
                    let err = io::Error::new(io::ErrorKind::TimedOut, "request body too slow");
                    // The original payload is dropped here: nothing more is read.
                    Some((Err(PayloadError::Io(err)), None))
                }
            }
        }
    });
    // Fused: a reader may poll again after the end (actix-multipart does), which an
    // `unfold` answers with a panic.
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream.fuse());
    Payload::from(stream)
}
