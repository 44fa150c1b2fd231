//! gRPC end to end: a real gRPC server (tonic's health service) behind Gatehouse over
//! cleartext HTTP/2 (`protocol: h2c`), a real gRPC client (tonic) speaking HTTP/2 over
//! mutual TLS to Gatehouse, with the client-certificate, phantom-token and claims filters
//! in front. Refusals arrive as gRPC statuses, trailers pass through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::gatehouse_devauth::pki::Issued;
use gatehouse_testkit::{gateway_client, partner_client, AuthServer, Proxy, TestConfig, TestPki};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The listener both tests use: mutual TLS with the test PKI.
/// The edge listener (certificates required), two threads: the tests add the rest.
fn edge() -> String {
    TestConfig::edge("required").threads(2).build()
}

/// tonic's health service on a loopback port, reporting `gatehouse.Test` as serving.
async fn grpc_server() -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("gatehouse.Test", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// The same service over TLS (the test PKI's `localhost` certificate), ALPN `h2` only.
async fn grpc_tls_server(cert: &Issued) -> SocketAddr {
    use openssl::ssl::{AlpnError, SslAcceptor, SslMethod};
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("gatehouse.Test", tonic_health::ServingStatus::Serving)
        .await;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&cert.cert).unwrap();
    for c in &cert.chain {
        b.add_extra_chain_cert(c.clone()).unwrap();
    }
    b.set_private_key(&cert.key).unwrap();
    b.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::NOACK)
    });
    let acceptor = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = async_stream(listener, acceptor);
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

/// TLS connections as tonic's server takes them.
fn async_stream(
    listener: tokio::net::TcpListener,
    acceptor: openssl::ssl::SslAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut s) = tokio_openssl::SslStream::new(ssl, tcp) else {
                    return;
                };
                if Pin::new(&mut s).accept().await.is_ok() {
                    let _ = tx.send(Ok(TlsIo(s))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

struct TlsIo(tokio_openssl::SslStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tonic channel to Gatehouse: TLS with the partner's certificate, ALPN `h2`.
async fn channel(pki: &TestPki, proxy: SocketAddr, cert: &Issued) -> Channel {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut()
        .add_cert(pki.pki.root.cert.clone())
        .unwrap();
    b.set_verify(SslVerifyMode::PEER);
    b.set_certificate(&cert.cert).unwrap();
    for c in &cert.chain {
        b.add_extra_chain_cert(c.clone()).unwrap();
    }
    b.set_private_key(&cert.key).unwrap();
    b.set_alpn_protos(b"\x02h2").unwrap();
    let tls = b.build();
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(proxy).await?;
            let ssl = tls
                .configure()
                .and_then(|c| c.into_ssl("localhost"))
                .map_err(std::io::Error::other)?;
            let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
            Pin::new(&mut s)
                .connect()
                .await
                .map_err(std::io::Error::other)?;
            assert_eq!(s.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
            Ok::<_, std::io::Error>(TokioIo::new(s))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .unwrap()
}

fn check_request(token: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut r = tonic::Request::new(HealthCheckRequest {
        service: "gatehouse.Test".into(),
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_through_the_whole_chain_with_grpc_shaped_refusals() {
    let pki = TestPki::new();
    let grpc = grpc_server().await;
    let mut auth = AuthServer::start(
        &pki,
        vec![
            partner_client("partner-a", "transactions"),
            partner_client("partner-b", "reports"),
            gateway_client(),
        ],
    )
    .await;
    std::env::set_var("GH_TEST_SECRET", "gateway-secret");
    let y = edge()
        + "authorization_servers:
  dev:
    issuer: ${ISSUER}
    jwks_uri: ${ISSUER}/oauth/jwks
    ca_file: ${CERT_DIR}/root-ca.pem
    algorithms: [ES256]
    introspection:
      url: ${ISSUER}/oauth/introspect
      accept: token-introspection+jwt
      timeout: 1s
      client_auth: { method: client_secret_basic, client_id: gateway, client_secret_env: GH_TEST_SECRET }
    cache: { max_ttl: 60s, negative_ttl: 1s }
upstreams:
  grpc: { peers: [\"${GRPC}\"], protocol: h2c, connect_timeout: 1s }
routes:
  - name: health
    match: { path_prefix: /grpc.health.v1.Health/ }
    upstream: grpc
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        forward_jwt: introspection_response
      - kind: claims
        scope: [transactions]
";
    let gh = Proxy::start(
        &y,
        &[
            ("CERT_DIR", pki.dir.display().to_string()),
            ("ISSUER", auth.issuer()),
            ("GRPC", grpc.to_string()),
        ],
    )
    .await;
    let token_a = auth.token(&pki, &pki.pki.partner_a).await;
    let token_b = auth.token(&pki, &pki.pki.partner_b).await;

    // a unary call succeeds: the answer came through, and with it the trailers
    // (tonic reads the status from grpc-status in the trailers)
    let mut a = HealthClient::new(channel(&pki, gh.addr, &pki.pki.partner_a).await);
    let res = a.check(check_request(Some(&token_a))).await.unwrap();
    assert_eq!(res.get_ref().status, ServingStatus::Serving as i32);
    // tonic merges the trailers into the response's metadata: the server's grpc-status
    // trailer is there, so the trailers crossed both HTTP/2 hops
    assert_eq!(res.metadata().get("grpc-status").unwrap(), "0", "{res:?}");

    // no token: UNAUTHENTICATED, with the reason in grpc-message
    let err = a.check(check_request(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().starts_with("missing_token: "), "{err:?}");
    // RFC 6750 §3.1: no error code when no token was presented, still a challenge
    assert_eq!(err.metadata().get("www-authenticate").unwrap(), "Bearer");

    // an active token without the route's scope: PERMISSION_DENIED
    let mut b = HealthClient::new(channel(&pki, gh.addr, &pki.pki.partner_b).await);
    let err = b.check(check_request(Some(&token_b))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // the authorization server down: UNAVAILABLE for a token it never saw
    auth.stop();
    let err = a
        .check(check_request(Some("never-introspected-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // the refusals were counted like any other
    assert!(
        gh.metric("gatehouse_rejections_total{filter=\"claims\",reason=\"insufficient_scope\",route=\"health\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_over_tls_to_the_upstream_negotiated_by_alpn() {
    let pki = TestPki::new();
    let grpc = grpc_tls_server(&pki.pki.server).await;
    let y = edge()
        + "upstreams:
  grpc:
    peers: [\"${GRPC}\"]
    protocol: h2
    tls: { sni: localhost, ca_file: \"${CERT_DIR}/root-ca.pem\" }
    health_check: { type: tcp, interval: 200ms, timeout: 200ms }
routes:
  - name: health
    match: { path_prefix: / }
    upstream: grpc
    filters:
      - kind: client_cert
";
    let gh = Proxy::start(
        &y,
        &[
            ("CERT_DIR", pki.dir.display().to_string()),
            ("GRPC", grpc.to_string()),
        ],
    )
    .await;
    let mut a = HealthClient::new(channel(&pki, gh.addr, &pki.pki.partner_a).await);
    for _ in 0..3 {
        let res = a.check(check_request(None)).await.unwrap();
        assert_eq!(res.get_ref().status, ServingStatus::Serving as i32);
        assert_eq!(res.metadata().get("grpc-status").unwrap(), "0");
    }
    // a service the server does not know: its own status comes back unchanged
    let err = a
        .check(tonic::Request::new(HealthCheckRequest {
            service: "no.Such".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        gh.metric("gatehouse_upstream_health_checks_total{result=\"success\",upstream=\"grpc\"}")
            .await
            >= 1.0
    );
}
