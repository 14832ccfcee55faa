//! Operations: what the master tells operators and service managers, as pure functions the
//! runtime feeds with I/O.
//!
//! - [`snapshot`]: the status snapshot (the core's half plus /proc figures and counters).
//! - [`prom`]: the snapshot in the Prometheus/OpenMetrics text format; [`prom_stats`]: the
//!   children's own figures (requests, event loop, heap, GC) in it; [`app_metrics`]: the app's
//!   prom-client metrics merged over the children; [`text`]: OpenMetrics written by hand.
//! - [`http`]: the metrics endpoint's request parsing and responses.
//! - [`systemd`]: `sd_notify` messages and socket activation (`LISTEN_FDS`).
//! - [`procstat`]: CPU time from `/proc/<pid>/stat`.
//! - [`control`]: where the CLI finds a master's control socket.

pub(crate) mod app_metrics;
pub(crate) mod control;
pub(crate) mod http;
pub(crate) mod procstat;
pub(crate) mod prom;
pub(crate) mod prom_stats;
pub(crate) mod snapshot;
pub(crate) mod systemd;
pub(crate) mod text;
