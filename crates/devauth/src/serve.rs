//! A minimal HTTP/1.1 server on hyper, shared by the demo upstream, the dev authorization
//! server and the test harness's upstreams. Optionally TLS (with an optional client
//! certificate) through tokio-openssl.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openssl::ssl::SslAcceptor;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A request as the handlers see it: head, whole body, and the client certificate's DER
/// when the connection was mutual TLS.
pub struct Req {
    pub parts: http::request::Parts,
    pub body: Bytes,
    pub peer_cert_der: Option<Vec<u8>>,
}

/// The response type.
pub type Resp = http::Response<Full<Bytes>>;

/// A request handler.
pub type Handler = Arc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;

/// Build a handler from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    Arc::new(move |r| Box::pin(f(r)))
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Resp {
    bytes_response(status, "application/json", value.to_string().into_bytes())
}

/// A response with a body and content type.
pub fn bytes_response(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// Serve `handler` on `listener` until the task is dropped; dropping it also closes every
/// open connection (so a test can take a server down completely). With `tls`, every
/// connection does a TLS handshake first (the acceptor decides whether a client cert is
/// requested).
pub async fn serve(listener: TcpListener, tls: Option<SslAcceptor>, handler: Handler) {
    let tls = tls.map(Arc::new);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => serve_conn(TokioIo::new(stream), None, handler).await,
                Some(acc) => {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acc.context()) else {
                        return;
                    };
                    let Ok(mut s) = tokio_openssl::SslStream::new(ssl, stream) else {
                        return;
                    };
                    if Pin::new(&mut s).accept().await.is_err() {
                        return;
                    }
                    let cert = s.ssl().peer_certificate().and_then(|c| c.to_der().ok());
                    serve_conn(TokioIo::new(s), cert, handler).await
                }
            }
        });
    }
}

async fn serve_conn<I>(io: TokioIo<I>, cert: Option<Vec<u8>>, handler: Handler)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: http::Request<Incoming>| {
        let handler = handler.clone();
        let cert = cert.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(
                handler(Req {
                    parts,
                    body,
                    peer_cert_der: cert,
                })
                .await,
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
}

/// The demo upstream: answers with a JSON object of the request headers it received
/// (lower-case names). `GET …/claims` instead answers with the claims of the JWT in
/// `Authorization: Bearer` (decoded, not verified: this is what an API behind Gatehouse
/// would read after verifying it).
pub fn echo_handler() -> Handler {
    handler(|req: Req| async move {
        if req.parts.uri.path().ends_with("/claims") {
            let claims = req
                .parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|jwt| jwt.split('.').nth(1))
                .and_then(|p| {
                    use base64::Engine;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p)
                        .ok()
                })
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            return json(200, &serde_json::json!({ "jwt_claims": claims }));
        }
        let mut headers = serde_json::Map::new();
        for (k, v) in &req.parts.headers {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match headers.get_mut(k.as_str()) {
                Some(serde_json::Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(&v);
                }
                _ => {
                    headers.insert(k.as_str().to_owned(), serde_json::Value::String(v));
                }
            }
        }
        json(200, &serde_json::Value::Object(headers))
    })
}
