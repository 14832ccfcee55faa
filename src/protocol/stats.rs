//! What a child's heartbeat carries besides its lag (`stats`, `lib/child_stats.js`): its
//! event-loop utilization, V8 heap, GC time and, in an app worker, its request counts and
//! duration histogram. Everything but `elu` and `inFlight` is cumulative since the child
//! started, so a lost beat loses nothing; the master keeps the latest of each child.

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the request duration histogram's buckets, `+Inf` implied. The
/// workers count with the same list (`lib/child_stats.js`, `BUCKETS`).
pub(crate) const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The status classes of [`HttpStats::codes`], in order.
pub(crate) const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "aborted"];

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildStats {
    /// Event-loop utilization over the last heartbeat interval, 0..1.
    pub(crate) elu: f64,
    /// Time the event loop was busy since the child started, ms.
    pub(crate) busy_ms: f64,
    /// V8's heap: used and total (allocated) bytes.
    pub(crate) heap_used: u64,
    pub(crate) heap_total: u64,
    /// Time spent in garbage collection since the child started, ms.
    pub(crate) gc_ms: f64,
    /// The requests of the servers the master hands sockets to (app workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) http: Option<HttpStats>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpStats {
    /// Responses by status class ([`CODES`]): 1xx to 5xx, then those cut off before they were
    /// finished.
    pub(crate) codes: [u64; 6],
    pub(crate) in_flight: u64,
    /// Requests per duration bucket, not cumulative: `buckets[i]` took at most `BUCKETS[i]`
    /// and more than the bound before it; the last one more than every bound.
    pub(crate) buckets: [u64; 14],
    /// The durations' sum, seconds.
    pub(crate) sum: f64,
}

impl HttpStats {
    /// Requests answered (or cut off) so far.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl ChildStats {
    /// A heartbeat's `stats`, or `None` when they are not what `lib/child_stats.js` sends
    /// (another version, or a child that is not well formed): the beat itself still counts.
    pub(crate) fn parse(raw: &[u8]) -> Option<ChildStats> {
        let s: ChildStats = serde_json::from_slice(raw).ok()?;
        let sane = |v: f64| v.is_finite() && v >= 0.0;
        let http_ok = s.http.as_ref().is_none_or(|h| sane(h.sum));
        (sane(s.elu) && sane(s.busy_ms) && sane(s.gc_ms) && http_ok).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_worker_sends() {
        let raw = br#"{"elu":0.25,"busyMs":1200,"heapUsed":100,"heapTotal":200,"gcMs":3.5,
            "http":{"codes":[0,398,0,2,0,0],"inFlight":1,"buckets":[1,2,3,4,5,6,7,8,9,10,11,12,13,314],"sum":12.5}}"#;
        let s = ChildStats::parse(raw).unwrap();
        assert_eq!(s.heap_used, 100);
        let h = s.http.unwrap();
        assert_eq!(h.codes[1], 398);
        assert_eq!(h.count(), 405);
        let agent =
            ChildStats::parse(br#"{"elu":0,"busyMs":1,"heapUsed":1,"heapTotal":2,"gcMs":0}"#);
        assert!(agent.unwrap().http.is_none());
    }

    #[test]
    fn drops_what_it_cannot_use() {
        for raw in [
            &br#"{"elu":-1,"busyMs":1,"heapUsed":1,"heapTotal":2,"gcMs":0}"#[..],
            br#"{"elu":0,"busyMs":1,"heapUsed":1.5,"heapTotal":2,"gcMs":0}"#,
            br#"{"elu":0,"busyMs":1,"heapUsed":1,"heapTotal":2,"gcMs":0,"http":{"codes":[1],"inFlight":0,"buckets":[],"sum":0}}"#,
            br#"{"elu":0}"#,
            b"[1,2]",
            b"nope",
        ] {
            assert_eq!(ChildStats::parse(raw), None, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn the_worker_counts_with_the_same_buckets() {
        let js = include_str!("../../lib/child_stats.js");
        let line = js
            .lines()
            .find(|l| l.starts_with("const BUCKETS = ["))
            .expect("BUCKETS in lib/child_stats.js");
        let list = line
            .trim_start_matches("const BUCKETS = [")
            .trim_end_matches(" ];");
        let js_buckets: Vec<f64> = list.split(',').map(|v| v.trim().parse().unwrap()).collect();
        assert_eq!(js_buckets, BUCKETS);
    }
}
