//! The snapshot in the Prometheus text format (OpenMetrics flavour, which Prometheus reads),
//! encoded by `prometheus-client`. A fresh registry per scrape: the snapshot is the truth, and
//! series of exited children disappear with them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::snapshot::{Counters, Snapshot};
use super::{app_metrics, prom_stats};
use crate::core::OpsPhase;

pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Proc {
    role: String,
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn fgauge(v: f64) -> FGauge {
    let g = FGauge::default();
    g.set(v);
    g
}

struct ProcFamilies {
    rss: Family<Proc, Gauge>,
    cpu: Family<Proc, FGauge>,
    messages: Family<Proc, Counter>,
    bytes: Family<Proc, Counter>,
    sticky: Family<Proc, Counter>,
    scrape_timeouts: Family<Proc, Counter>,
}

impl ProcFamilies {
    fn add(&self, p: &Proc, rss: Option<u64>, cpu: Option<f64>, c: &Counters) {
        if let Some(rss) = rss {
            self.rss.get_or_create(p).set(rss as i64);
        }
        if let Some(cpu) = cpu {
            self.cpu.get_or_create(p).set(cpu);
        }
        self.messages.get_or_create(p).inc_by(c.messages_relayed);
        self.bytes.get_or_create(p).inc_by(c.bytes_relayed);
        self.sticky.get_or_create(p).inc_by(c.sticky_handed_over);
        self.scrape_timeouts
            .get_or_create(p)
            .inc_by(c.scrape_timeouts);
    }
}

/// A scrape's answer: the master's figures, the children's own ([`prom_stats`]), then the app's
/// prom-client metrics merged over the children's `answers` ([`app_metrics`]; by process when
/// asked), then `# EOF`. Also says how many answers could not be read.
pub(crate) fn render_scrape(
    s: &Snapshot,
    answers: &[app_metrics::Answer<'_>],
    by_process: bool,
) -> (String, usize) {
    let mut out = render_own(s);
    prom_stats::render(&s.children, &mut out);
    let merged = app_metrics::merge(answers, by_process);
    out.push_str(&merged.text);
    out.push_str("# EOF\n");
    (out, merged.unreadable)
}

/// The snapshot alone (no app metrics).
pub(crate) fn render(s: &Snapshot) -> String {
    render_scrape(s, &[], false).0
}

/// The master's own families (from the snapshot), without the closing `# EOF`.
fn render_own(s: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("egg_cluster");
    let m = &s.master;
    reg.register(
        "uptime_seconds",
        "Seconds since the master started",
        fgauge(m.uptime_ms as f64 / 1000.0),
    );
    // The label sets in the order each family should list them (see `in_order`).
    let mut order: Vec<String> = Vec::new();
    let phase: Family<PhaseLabel, Gauge> = Family::default();
    for p in [
        OpsPhase::Starting,
        OpsPhase::Ready,
        OpsPhase::Reloading,
        OpsPhase::Closing,
    ] {
        order.push(format!("phase=\"{}\"", p.as_str()));
        phase
            .get_or_create(&PhaseLabel {
                phase: p.as_str().into(),
            })
            .set(i64::from(p == m.core.phase));
    }
    reg.register("phase", "The master's phase (1 for the current one)", phase);
    reg.register(
        "ready",
        "1 when ready for traffic (/readyz)",
        gauge(i64::from(m.core.ready)),
    );
    reg.register(
        "healthy",
        "1 when the agent started and a worker serves (/healthz)",
        gauge(i64::from(m.core.healthy)),
    );
    reg.register(
        "workers_desired",
        "App workers wanted",
        gauge(m.core.workers as i64),
    );
    reg.register(
        "workers_serving",
        "App workers serving on the app's port",
        gauge(m.core.serving as i64),
    );
    reg.register(
        "reforks",
        "Workers started again after an unexpected exit",
        counter(m.core.reforks),
    );
    reg.register(
        "backoff_seconds",
        "Delay before the next refork of a crash loop (0 outside one)",
        fgauge(m.core.backoff_ms as f64 / 1000.0),
    );
    reg.register(
        "malformed_lines",
        "Malformed lines from children, dropped",
        counter(m.core.malformed),
    );

    let restarts: Family<Proc, Counter> = Family::default();
    let started: Family<Proc, Gauge> = Family::default();
    let procs = ProcFamilies {
        rss: Family::default(),
        cpu: Family::default(),
        messages: Family::default(),
        bytes: Family::default(),
        sticky: Family::default(),
        scrape_timeouts: Family::default(),
    };
    order.push("role=\"master\",id=\"0\"".into());
    procs.add(
        &Proc {
            role: "master".into(),
            id: "0".into(),
        },
        m.rss,
        m.cpu,
        &m.counters,
    );
    for c in &s.children {
        let p = Proc {
            role: c.core.role.into(),
            id: c.core.id.to_string(),
        };
        order.push(format!("role=\"{}\",id=\"{}\"", p.role, p.id));
        procs.add(&p, c.rss, c.cpu, &c.counters);
        restarts.get_or_create(&p).inc_by(c.core.restarts);
        started
            .get_or_create(&p)
            .set((c.core.started_at / 1000) as i64);
    }
    reg.register(
        "process_resident_memory_bytes",
        "Resident set size",
        procs.rss,
    );
    reg.register(
        "process_cpu_percent",
        "CPU use since the previous sample, 100 = one core",
        procs.cpu,
    );
    reg.register(
        "messages_relayed",
        "Messages sent by the process and routed by the master (master: all)",
        procs.messages,
    );
    reg.register("bytes_relayed", "Bytes of those messages", procs.bytes);
    reg.register(
        "sticky_connections_handed_over",
        "Sticky connections handed to the worker (master: all)",
        procs.sticky,
    );
    reg.register(
        "scrape_timeouts",
        "Scrapes of /metrics the child did not answer in time, and was left out of (master: all)",
        procs.scrape_timeouts,
    );
    reg.register(
        "slot_restarts",
        "Unexpected exits in this worker's slot so far",
        restarts,
    );
    reg.register(
        "process_start_time_seconds",
        "When the process was spawned (Unix time)",
        started,
    );

    // Hung children (docs/self-healing.md).
    let lag: Family<Proc, FGauge> = Family::default();
    let mut hung_now = 0;
    for c in &s.children {
        if let Some(ms) = c.core.lag_ms {
            let p = Proc {
                role: c.core.role.into(),
                id: c.core.id.to_string(),
            };
            lag.get_or_create(&p).set(ms as f64 / 1000.0);
        }
        hung_now += i64::from(c.core.hung_since.is_some());
    }
    reg.register(
        "event_loop_lag_seconds",
        "How late the child's last heartbeat timer fired",
        lag,
    );
    reg.register(
        "hung_children",
        "Children found hung and not gone yet",
        gauge(hung_now),
    );
    reg.register(
        "reloads",
        "Rolling reloads finished (the failed ones included)",
        counter(m.core.reloads),
    );
    reg.register(
        "reload_failures",
        "Rolling reloads that failed (the old workers kept serving)",
        counter(m.core.reloads_failed),
    );
    reg.register(
        "hung_replacements",
        "Hung (or never listening) app workers replaced",
        counter(m.core.hung_replaced),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    let mut out = in_order(&out, &order);
    if out.ends_with("# EOF\n") {
        out.truncate(out.len() - "# EOF\n".len());
    }
    out
}

/// A `Family` keeps its label sets in a `HashMap`, so each scrape would list them in another
/// order: the samples of each family are put in `order` (the master, then the children in
/// spawn order; the phases in their own order), so that scrapes compare line by line.
fn in_order(text: &str, order: &[String]) -> String {
    let key = |line: &str| {
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or("", |(labels, _)| labels);
        order.iter().position(|l| l == labels).unwrap_or(usize::MAX)
    };
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_by_key(|l| key(l));
        for l in samples.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ops::ChildStatus;
    use crate::core::MasterStatus;
    use crate::ops::http::{answer, Route};
    use crate::ops::snapshot::{ChildSnapshot, MasterSnapshot};

    fn snapshot(phase: OpsPhase, ready: bool) -> Snapshot {
        Snapshot {
            master: MasterSnapshot {
                pid: 1,
                core: MasterStatus {
                    phase,
                    started_at: 1000,
                    workers: 2,
                    serving: 1,
                    healthy: true,
                    ready,
                    reforks: 3,
                    backoff_ms: 200,
                    malformed: 4,
                    hung: 2,
                    hung_replaced: 1,
                    reloads: 4,
                    reloads_failed: 1,
                    refork_held: None,
                    upgrading_to: None,
                },
                uptime_ms: 2500,
                rss: Some(1 << 20),
                cpu: Some(1.5),
                counters: Counters {
                    messages_relayed: 10,
                    bytes_relayed: 100,
                    sticky_handed_over: 0,
                    scrape_timeouts: 3,
                },
            },
            children: vec![ChildSnapshot {
                core: ChildStatus {
                    role: "app",
                    id: 2,
                    pid: 7,
                    slot: Some(0),
                    state: "serving",
                    started_at: 5000,
                    serving_since: Some(6000),
                    restarts: 1,
                    last_exit: None,
                    malformed: 0,
                    lag_ms: Some(312),
                    hung_since: Some(9000),
                },
                rss: Some(2048),
                cpu: None,
                counters: Counters {
                    messages_relayed: 6,
                    bytes_relayed: 60,
                    sticky_handed_over: 0,
                    scrape_timeouts: 2,
                },
                stats: None,
            }],
        }
    }

    #[test]
    fn renders_every_figure_with_role_and_id() {
        let text = render(&snapshot(OpsPhase::Ready, true));
        for line in [
            "egg_cluster_uptime_seconds 2.5",
            "egg_cluster_phase{phase=\"ready\"} 1",
            "egg_cluster_phase{phase=\"closing\"} 0",
            "egg_cluster_ready 1",
            "egg_cluster_workers_serving 1",
            "egg_cluster_reforks_total 3",
            "egg_cluster_backoff_seconds 0.2",
            "egg_cluster_malformed_lines_total 4",
            "egg_cluster_process_resident_memory_bytes{role=\"master\",id=\"0\"} 1048576",
            "egg_cluster_process_resident_memory_bytes{role=\"app\",id=\"2\"} 2048",
            "egg_cluster_process_cpu_percent{role=\"master\",id=\"0\"} 1.5",
            "egg_cluster_messages_relayed_total{role=\"app\",id=\"2\"} 6",
            "egg_cluster_bytes_relayed_total{role=\"master\",id=\"0\"} 100",
            "egg_cluster_slot_restarts_total{role=\"app\",id=\"2\"} 1",
            "egg_cluster_process_start_time_seconds{role=\"app\",id=\"2\"} 5",
            "egg_cluster_event_loop_lag_seconds{role=\"app\",id=\"2\"} 0.312",
            "egg_cluster_hung_children 1",
            "egg_cluster_hung_replacements_total 1",
            "egg_cluster_reloads_total 4",
            "egg_cluster_reload_failures_total 1",
            "egg_cluster_scrape_timeouts_total{role=\"master\",id=\"0\"} 3",
            "egg_cluster_scrape_timeouts_total{role=\"app\",id=\"2\"} 2",
            "# TYPE egg_cluster_messages_relayed counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // No CPU figure for a process /proc could not tell about.
        assert!(!text.contains("egg_cluster_process_cpu_percent{role=\"app\""));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_sets_come_in_a_stable_order() {
        let mut s = snapshot(OpsPhase::Ready, true);
        let child = s.children[0].clone();
        for id in [3, 4, 5, 6, 7, 8, 9, 10, 11] {
            let mut c = child.clone();
            c.core.id = id;
            s.children.push(c);
        }
        let text = render(&s);
        // Every scrape the same (each render builds new `HashMap`s with new random seeds).
        for _ in 0..20 {
            assert_eq!(render(&s), text);
        }
        let rss: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("egg_cluster_process_resident_memory_bytes{"))
            .map(|l| &l[l.find('{').unwrap()..l.find('}').unwrap() + 1])
            .collect();
        let mut expected = vec!["{role=\"master\",id=\"0\"}".to_string()];
        expected.extend((2..=11).map(|id| format!("{{role=\"app\",id=\"{id}\"}}")));
        assert_eq!(rss, expected);
        let phases: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("egg_cluster_phase{"))
            .collect();
        assert_eq!(
            phases,
            [
                "egg_cluster_phase{phase=\"starting\"} 0",
                "egg_cluster_phase{phase=\"ready\"} 1",
                "egg_cluster_phase{phase=\"reloading\"} 0",
                "egg_cluster_phase{phase=\"closing\"} 0",
            ]
        );
    }

    #[test]
    fn probes_follow_the_snapshot() {
        let status = |b: Vec<u8>| String::from_utf8(b).unwrap()[9..12].to_string();
        let up = snapshot(OpsPhase::Ready, true);
        assert_eq!(status(answer(Route::Readyz, false, &up)), "200");
        assert_eq!(status(answer(Route::Healthz, false, &up)), "200");
        let closing = snapshot(OpsPhase::Closing, false);
        let r = String::from_utf8(answer(Route::Readyz, false, &closing)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("not ok: ready for traffic (phase closing, 1/2 app workers serving)\n"));
        let m = String::from_utf8(answer(Route::Metrics { by_process: false }, true, &up)).unwrap();
        assert!(m.contains(CONTENT_TYPE) && m.ends_with("\r\n\r\n"));
    }
}
