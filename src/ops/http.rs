//! The metrics endpoint's HTTP/1.x, by hand: one request per connection, no body read,
//! `Connection: close`. Only `/metrics`, `/healthz` and `/readyz` exist.

use super::prom;
use super::snapshot::Snapshot;

/// The most the request head may take.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `by_process`: `?by=process`, the app's metrics of each child under `role`/`id` rather
    /// than merged.
    Metrics {
        by_process: bool,
    },
    Healthz,
    Readyz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The head is not complete yet.
    Incomplete,
    /// A request for one of the routes (`head`: a HEAD request, no body in the answer).
    Request { route: Route, head: bool },
    /// Answer with this status and close.
    Reject(u16),
}

/// Parses what was read so far.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let end = match find_head_end(buf) {
        Some(end) => end,
        None if buf.len() >= MAX_HEAD => return Parsed::Reject(431),
        None => return Parsed::Incomplete,
    };
    if end > MAX_HEAD {
        return Parsed::Reject(431);
    }
    let head = &buf[..end];
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Parsed::Reject(400);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Reject(400);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Parsed::Reject(400);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = match path {
        "/metrics" => Route::Metrics {
            by_process: query.split('&').any(|p| p == "by=process"),
        },
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        _ => return Parsed::Reject(404),
    };
    match method {
        "GET" => Parsed::Request { route, head: false },
        "HEAD" => Parsed::Request { route, head: true },
        _ => Parsed::Reject(405),
    }
}

/// The end of the head (after the blank line), `\r\n\r\n` or a bare `\n\n`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

pub(crate) fn response(status: u16, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

pub(crate) fn reject(status: u16) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        &format!("{}\n", reason(status)),
        false,
    )
}

/// The answer to `route` from `snapshot`.
pub(crate) fn answer(route: Route, head: bool, snapshot: &Snapshot) -> Vec<u8> {
    let m = &snapshot.master;
    let text = "text/plain; charset=utf-8";
    let verdict = |ok: bool, what: &str| {
        let status = if ok { 200 } else { 503 };
        let body = format!(
            "{}: {what} (phase {}, {}/{} app workers serving)\n",
            if ok { "ok" } else { "not ok" },
            m.core.phase.as_str(),
            m.core.serving,
            m.core.workers
        );
        response(status, text, &body, head)
    };
    match route {
        Route::Metrics { .. } => response(200, prom::CONTENT_TYPE, &prom::render(snapshot), head),
        Route::Healthz => verdict(m.core.healthy, "agent started and an app worker serving"),
        Route::Readyz => verdict(m.core.ready, "ready for traffic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let p = |s: &str| parse(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Incomplete
        );
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Request {
                route: Route::Metrics { by_process: false },
                head: false
            }
        );
        assert_eq!(
            p("GET /metrics?x=1&by=process HTTP/1.1\r\n\r\n"),
            Parsed::Request {
                route: Route::Metrics { by_process: true },
                head: false
            }
        );
        assert_eq!(
            p("HEAD /readyz?x=1 HTTP/1.0\n\n"),
            Parsed::Request {
                route: Route::Readyz,
                head: true
            }
        );
        assert_eq!(
            p("GET /healthz HTTP/1.1\r\n\r\n"),
            Parsed::Request {
                route: Route::Healthz,
                head: false
            }
        );
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Parsed::Reject(404));
        assert_eq!(p("GET /metrics/x HTTP/1.1\r\n\r\n"), Parsed::Reject(404));
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Parsed::Reject(405));
        assert_eq!(p("GET /metrics\r\n\r\n"), Parsed::Reject(400));
        assert_eq!(p("GET  /metrics HTTP/1.1\r\n\r\n"), Parsed::Reject(400));
        assert_eq!(p("GET /metrics HTTP/2\r\n\r\n"), Parsed::Reject(400));
        assert_eq!(p("get /metrics HTTP/1.1\r\n\r\n"), Parsed::Reject(400));
        assert_eq!(
            p("GET http://x/metrics HTTP/1.1\r\n\r\n"),
            Parsed::Reject(400)
        );
        assert_eq!(
            parse(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Reject(400)
        );
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(p(&big), Parsed::Reject(431));
        let big_done = format!("{big}\r\n");
        assert_eq!(p(&big_done), Parsed::Reject(431));
    }

    #[test]
    fn responses_close_and_count_bytes() {
        let r = String::from_utf8(response(200, "text/plain", "hi\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 3\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nhi\n"));
        let h = String::from_utf8(response(200, "text/plain", "hi\n", true)).unwrap();
        assert!(h.ends_with("\r\n\r\n"));
        let r = String::from_utf8(reject(405)).unwrap();
        assert!(r.contains("Allow: GET, HEAD\r\n"));
    }
}
