//! The API's listeners: gRPC (with server reflection v1 and v1alpha, and the standard health
//! service) and REST, each over TLS from a certificate re-read when it rotates, or plaintext
//! with `--insecure-anonymous`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use triton_core::tls::ReloadingCert;
use triton_proto::application::application_server::ApplicationServer;
use triton_proto::deployflow::deploy_flow_server::DeployFlowServer;
use triton_proto::pod::pod_server::PodServer;

use super::ApiContext;
use super::grpc::Services;

/// A TLS handshake must finish in this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 request's headers must arrive in this time (a slow client holds no slot for ever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find clients that vanished without closing (a long Watch would hold its stream).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The gRPC services as one router: DeployFlow, Application, Pod, health and reflection.
pub async fn grpc_router(ctx: Arc<ApiContext>) -> anyhow::Result<axum::Router> {
    let svc = Services(ctx);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DeployFlowServer<Services>>().await;
    reporter.set_serving::<ApplicationServer<Services>>().await;
    reporter.set_serving::<PodServer<Services>>().await;
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(triton_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(triton_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(
        tonic::service::Routes::new(DeployFlowServer::new(svc.clone()))
            .add_service(ApplicationServer::new(svc.clone()))
            .add_service(PodServer::new(svc))
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha)
            .into_axum_router(),
    )
}

/// Binds `addr` (failing at once when it cannot) and serves `router` on it for ever.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {what}: {e}"))
}

/// Serves HTTP/1.1 and HTTP/2 (with prior knowledge in plaintext, by ALPN over TLS), at most
/// `max_connections` at once (at the cap, new connections wait in the listen backlog).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingCert>>,
    router: axum::Router,
    what: &'static str,
    max_connections: usize,
) {
    let acceptor = tls.map(|c| TlsAcceptor::from(Arc::new(c.server_config())));
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    loop {
        if slots.available_permits() == 0 {
            tracing::warn!(
                what,
                max_connections,
                "connection limit reached: accepting again when one closes"
            );
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (router, acceptor, builder) = (router.clone(), acceptor.clone(), builder.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = TowerToHyperService::new(router);
            let result = match acceptor {
                None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, what, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, what, "TLS handshake timed out");
                                return;
                            }
                        };
                    builder.serve_connection(TokioIo::new(tls), svc).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, what, "connection ended with an error");
            }
        });
    }
}
