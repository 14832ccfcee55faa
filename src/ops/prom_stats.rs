//! The figures the children's heartbeats carry (`stats`, [`crate::protocol::stats`]), per
//! `role`/`id`, in OpenMetrics text: the request counts and duration histogram of each app
//! worker, event-loop utilization, heap and GC time of every child. Written by hand (see
//! [`super::text`]) because the histogram's buckets are counted in the workers.

use super::snapshot::ChildSnapshot;
use super::text::{canonical, header, sample};
use crate::protocol::stats::{ChildStats, BUCKETS, CODES};

/// The families written here, in order.
pub(crate) const FAMILIES: [&str; 8] = [
    "egg_cluster_http_requests",
    "egg_cluster_http_requests_in_flight",
    "egg_cluster_http_request_duration_seconds",
    "egg_cluster_event_loop_utilization",
    "egg_cluster_event_loop_busy_seconds",
    "egg_cluster_heap_used_bytes",
    "egg_cluster_heap_total_bytes",
    "egg_cluster_gc_seconds",
];

/// The children's figures, family by family, children in snapshot order.
pub(crate) fn render(children: &[ChildSnapshot], out: &mut String) {
    let with: Vec<(String, &str, &ChildStats)> = children
        .iter()
        .filter_map(|c| Some((c.core.id.to_string(), c.core.role, c.stats.as_ref()?)))
        .collect();

    let http: Vec<_> = with
        .iter()
        .filter_map(|(id, role, s)| Some((id.as_str(), *role, s.http.as_ref()?)))
        .collect();
    if !http.is_empty() {
        header(
            out,
            FAMILIES[0],
            "counter",
            "HTTP responses of the app's servers by status class (aborted: cut off before the end)",
        );
        for (id, role, h) in &http {
            for (code, n) in CODES.iter().zip(h.codes) {
                let labels = [("role", *role), ("id", *id), ("code", *code)];
                sample(out, "egg_cluster_http_requests_total", labels, n as f64);
            }
        }
        header(out, FAMILIES[1], "gauge", "HTTP requests being served");
        for (id, role, h) in &http {
            let labels = [("role", *role), ("id", *id)];
            sample(out, FAMILIES[1], labels, h.in_flight as f64);
        }
        header(
            out,
            FAMILIES[2],
            "histogram",
            "Time from a request's arrival to the end of its response",
        );
        let bounds: Vec<String> = BUCKETS
            .iter()
            .map(|b| canonical(*b))
            .chain(std::iter::once("+Inf".to_string()))
            .collect();
        for (id, role, h) in &http {
            let mut cumulative = 0;
            for (le, n) in bounds.iter().zip(h.buckets) {
                cumulative += n;
                let labels = [("role", *role), ("id", *id), ("le", le.as_str())];
                sample(
                    out,
                    "egg_cluster_http_request_duration_seconds_bucket",
                    labels,
                    cumulative as f64,
                );
            }
            let labels = [("role", *role), ("id", *id)];
            sample(
                out,
                "egg_cluster_http_request_duration_seconds_count",
                labels,
                h.count() as f64,
            );
            sample(
                out,
                "egg_cluster_http_request_duration_seconds_sum",
                labels,
                h.sum,
            );
        }
    }
    if with.is_empty() {
        return;
    }
    type Figure = fn(&ChildStats) -> f64;
    let gauges: [(&str, &str, &str, Figure); 5] = [
        (
            FAMILIES[3],
            "gauge",
            "Event-loop utilization over the last heartbeat interval (0..1)",
            |s| s.elu,
        ),
        (
            FAMILIES[4],
            "counter",
            "Time the child's event loop was busy (its rate is the utilization)",
            |s| s.busy_ms / 1000.0,
        ),
        (FAMILIES[5], "gauge", "V8 heap used", |s| s.heap_used as f64),
        (FAMILIES[6], "gauge", "V8 heap allocated", |s| {
            s.heap_total as f64
        }),
        (
            FAMILIES[7],
            "counter",
            "Time spent in garbage collection",
            |s| s.gc_ms / 1000.0,
        ),
    ];
    for (family, kind, help, figure) in gauges {
        header(out, family, kind, help);
        let name = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.to_string()
        };
        for (id, role, s) in &with {
            sample(
                out,
                &name,
                [("role", *role), ("id", id.as_str())],
                figure(s),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ops::ChildStatus;
    use crate::ops::snapshot::Counters;
    use crate::protocol::stats::HttpStats;

    fn child(role: &'static str, id: u32, stats: Option<ChildStats>) -> ChildSnapshot {
        ChildSnapshot {
            core: ChildStatus {
                role,
                id,
                pid: 100 + id,
                slot: None,
                state: "serving",
                started_at: 0,
                serving_since: None,
                restarts: 0,
                last_exit: None,
                malformed: 0,
                lag_ms: None,
                hung_since: None,
            },
            rss: None,
            cpu: None,
            counters: Counters::default(),
            stats,
        }
    }

    #[test]
    fn requests_histogram_and_runtime_figures() {
        let mut buckets = [0; 14];
        buckets[2] = 300;
        buckets[13] = 100;
        let app = ChildStats {
            elu: 0.5,
            busy_ms: 1500.0,
            heap_used: 10,
            heap_total: 20,
            gc_ms: 250.0,
            http: Some(HttpStats {
                codes: [0, 390, 0, 10, 0, 0],
                in_flight: 2,
                buckets,
                sum: 123.5,
            }),
        };
        let agent = ChildStats {
            http: None,
            ..app.clone()
        };
        let mut out = String::new();
        render(
            &[
                child("agent", 1, Some(agent)),
                child("app", 2, Some(app)),
                child("app", 3, None),
            ],
            &mut out,
        );
        for line in [
            "# TYPE egg_cluster_http_requests counter",
            "egg_cluster_http_requests_total{role=\"app\",id=\"2\",code=\"2xx\"} 390",
            "egg_cluster_http_requests_total{role=\"app\",id=\"2\",code=\"aborted\"} 0",
            "egg_cluster_http_requests_in_flight{role=\"app\",id=\"2\"} 2",
            "egg_cluster_http_request_duration_seconds_bucket{role=\"app\",id=\"2\",le=\"0.001\"} 0",
            "egg_cluster_http_request_duration_seconds_bucket{role=\"app\",id=\"2\",le=\"0.005\"} 300",
            "egg_cluster_http_request_duration_seconds_bucket{role=\"app\",id=\"2\",le=\"10.0\"} 300",
            "egg_cluster_http_request_duration_seconds_bucket{role=\"app\",id=\"2\",le=\"+Inf\"} 400",
            "egg_cluster_http_request_duration_seconds_count{role=\"app\",id=\"2\"} 400",
            "egg_cluster_http_request_duration_seconds_sum{role=\"app\",id=\"2\"} 123.5",
            "egg_cluster_event_loop_utilization{role=\"agent\",id=\"1\"} 0.5",
            "egg_cluster_event_loop_busy_seconds_total{role=\"app\",id=\"2\"} 1.5",
            "egg_cluster_heap_total_bytes{role=\"app\",id=\"2\"} 20",
            "egg_cluster_gc_seconds_total{role=\"agent\",id=\"1\"} 0.25",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        // the agent serves no HTTP; a child without stats yet has no series
        assert!(!out.contains("role=\"agent\",id=\"1\",code"));
        assert!(!out.contains("id=\"3\""));
        let mut none = String::new();
        render(&[child("app", 3, None)], &mut none);
        assert_eq!(none, "");
    }
}
