//! A relying party's redirect endpoint on loopback: records the request target of every
//! request it gets (the authorization response) and answers a tiny page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub struct CallbackSink {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

impl CallbackSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind callback");
        let port = listener.local_addr().expect("addr").port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (t, a) = (targets.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (t, a) = (t.clone(), a.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut read = 0;
                    while read < buf.len() {
                        match stream.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => read += n,
                        }
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..read]).to_string();
                    let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                    if !target.starts_with("/favicon") {
                        if let Ok(mut list) = t.lock() {
                            list.push(target);
                        }
                        a.notify_one();
                    }
                    let body = "<!doctype html><title>callback</title><p>Signed in.</p>";
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        CallbackSink { port, targets, arrived }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// The query parameters of the first request to arrive (waits on a notification).
    pub async fn wait_for_query(&self, timeout: Duration) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let first = self.targets.lock().ok().and_then(|list| list.first().cloned());
            if let Some(target) = first {
                let url = url::Url::parse(&format!("http://127.0.0.1{target}")).expect("target");
                return url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            }
            let notified = self.arrived.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no request reached the callback within {timeout:?}");
            }
        }
    }
}
