//! The SDK client's trust store over a real TLS connection: a local server whose certificate
//! comes from a test authority that is in no store. The Lambda functions' client (Amazon's
//! roots) must refuse it, the same client given that authority as `AWS_CA_BUNDLE` must reach it.

use super::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/adapters/aws/test-tls");

/// Serves HTTPS on loopback with the test certificate; each request's first line is reported.
async fn tls_server() -> (u16, mpsc::UnboundedReceiver<String>) {
    let certs = CertificateDer::pem_file_iter(format!("{DIR}/server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{DIR}/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A refused handshake ends here: the client never sent a request.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let _ = seen.send(head.lines().next().unwrap_or_default().to_string());
                let body = "{}";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, requests)
}

async fn list_queues(store: tls::TrustStore, port: u16) -> Result<(), String> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(store))
        .endpoint_url(format!("https://localhost:{port}"))
        .region(aws_sdk_dynamodb::config::Region::new("eu-central-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&sdk)
        .list_queues()
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
}

#[tokio::test]
async fn the_lambda_client_trusts_amazons_roots_and_an_aws_ca_bundle_only() {
    let (port, mut requests) = tls_server().await;

    let amazon = trust_store_from(Trust::Amazon, None).unwrap();
    let refused = list_queues(amazon, port).await.unwrap_err();
    assert!(
        refused.to_lowercase().contains("certificate"),
        "refused for its certificate: {refused}"
    );
    assert!(requests.try_recv().is_err(), "no request got through");

    let bundle = std::path::PathBuf::from(format!("{DIR}/ca.pem"));
    let test_ca = trust_store_from(Trust::Amazon, Some(&bundle)).unwrap();
    list_queues(test_ca, port).await.unwrap();
    let line = requests.recv().await.unwrap();
    assert!(line.starts_with("POST / HTTP/1.1"), "{line}");
}

#[test]
fn the_compiled_in_roots_are_amazons_five() {
    let certs = CertificateDer::pem_slice_iter(AMAZON_ROOTS)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(certs.len(), 5);
}

#[test]
fn a_bad_aws_ca_bundle_is_named() {
    let missing = std::path::Path::new("/nonexistent/bundle.pem");
    let err = trust_store_from(Trust::Amazon, Some(missing)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("AWS_CA_BUNDLE (/nonexistent/bundle.pem):"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = trust_store_from(Trust::System, Some(&junk)).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}
