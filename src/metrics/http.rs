//! A minimal HTTP/1.1 server for `GET /metrics` on the tokio runtime: one short task
//! per connection, the request head bounded in size and time, `Connection: close`
//! after each answer. Anything but `GET`/`HEAD /metrics` gets 404 (other path) or 405
//! (other method). Encoding runs on the blocking pool: it calls the snapshot source,
//! which takes the sampler's locks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::CONTENT_TYPE;
use super::Metrics;

/// Largest request head read (request line + headers); a scraper sends ~200 bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client gets this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// And this long to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the request head asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (a query string is ignored); `head` for `HEAD`.
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Routes a request head (everything up to the blank line).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head: false },
        ("HEAD", "/metrics") => Route::Metrics { head: true },
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// Serves `listener` until `cancel` fires, then waits for open connections (each
/// bounded by the timeouts above).
pub async fn serve(listener: TcpListener, metrics: Metrics, cancel: CancellationToken) {
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(answer(stream, metrics.clone(), cancel.clone()));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    conns.close();
    conns.wait().await;
}

/// Reads the head (bounded), answers, closes.
async fn answer(mut stream: TcpStream, metrics: Metrics, cancel: CancellationToken) {
    let work = async {
        let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => {
                return respond(
                    &mut stream,
                    431,
                    "text/plain",
                    b"request header too large\n",
                )
                .await
            }
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        match route(&head) {
            Route::Metrics { head } => {
                let m = metrics.clone();
                let body = tokio::task::spawn_blocking(move || m.encode())
                    .await
                    .unwrap_or_default();
                let body = if head { Vec::new() } else { body.into_bytes() };
                respond(&mut stream, 200, CONTENT_TYPE, &body).await
            }
            Route::NotFound => {
                respond(&mut stream, 404, "text/plain", b"not found; try /metrics\n").await
            }
            Route::MethodNotAllowed => {
                respond(&mut stream, 405, "text/plain", b"only GET and HEAD\n").await
            }
            Route::BadRequest => respond(&mut stream, 400, "text/plain", b"bad request\n").await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = tokio::time::timeout(WRITE_TIMEOUT + READ_TIMEOUT, work) => {
            if let Ok(Err(e)) = r {
                tracing::debug!("metrics endpoint: {e}");
            }
        }
    }
}

/// The bytes up to and including the blank line; `None` when they exceed
/// [`MAX_REQUEST_BYTES`]; an error when the client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            r("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(r("GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(r("\u{0}\u{1}garbage"), Route::BadRequest);
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::metrics::{BuildLabels, Snapshot, SnapshotSource};

    #[derive(Debug)]
    struct Empty;
    impl SnapshotSource for Empty {
        fn snapshot(&self) -> Snapshot {
            Snapshot::default()
        }
    }

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_404s_other_paths_bounds_the_head_and_stops_on_cancel() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Metrics::new("t", BuildLabels::default(), Box::new(Empty));
        m.job_finished("smol", "succeeded", None);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, m, cancel.clone()));

        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(
            ok.contains(r#"edgewatt_jobs_total{device="t",model="smol",state="succeeded"} 1"#),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );

        let nf = get(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let na = get(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            na.starts_with("HTTP/1.1 405 ") && na.contains("Allow: GET"),
            "{na}"
        );
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
        let tl = get(addr, &big).await;
        assert!(tl.starts_with("HTTP/1.1 431 "), "{tl}");

        // A client that connects and says nothing does not hold up the stop.
        let _idle = TcpStream::connect(addr).await.unwrap();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("server stops on cancel")
            .unwrap();
    }
}
