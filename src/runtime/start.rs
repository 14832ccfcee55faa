//! The master's start on the JS thread: the pid file, the internal ports, the listeners that must
//! fail `startCluster` at once, the children's environment; then the runtime thread.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::input::{Command, Input};
use super::{
    children, control, handles, hung, now_ms, ops, pid_file, sticky, threads, upgrade, Emit,
    Runtime,
};
use crate::core::{self, Core, Routes};
use crate::error::{Error, Result};
use crate::log::{Level, Logger};
use crate::options::Options;

/// How to start Node children, captured from the JS side at start.
pub(crate) struct Launch {
    pub(crate) exec_path: String,
    pub(crate) exec_argv: Vec<String>,
    /// `process.env` at start; children get it (plus the channel variables).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) agent_worker_file: String,
    pub(crate) app_worker_file: String,
    /// egg 4's worker scripts (agent, app), used when the app runs on egg 4.
    pub(crate) egg4_worker_files: Option<(String, String)>,
    /// `process.debugPort`: app workers of a debugged master get consecutive ports after it.
    pub(crate) debug_port: u16,
    /// `process.version`.
    pub(crate) node_version: String,
    /// `process.execArgv` then `process.argv.slice(1)`: a new master's (an upgrade's) arguments.
    pub(crate) master_args: Vec<String>,
    /// `process.cwd()` at start.
    pub(crate) cwd: PathBuf,
    /// `process.send` existed at start (an IPC parent).
    pub(crate) has_parent: bool,
}

/// The JS thread's handle on the running master.
pub(crate) struct MasterHandle {
    tx: mpsc::UnboundedSender<Input>,
    logger: Arc<Logger>,
    pid_file: Option<PathBuf>,
    /// The CLI's control socket, removed at exit.
    control_path: Option<PathBuf>,
}

impl MasterHandle {
    pub(crate) fn command(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(Input::Command(cmd))
            .map_err(|_| Error::Stopped)
    }

    /// The master process is exiting (`process.on('exit')`): runs synchronously on the JS
    /// thread, since nothing asynchronous happens after that event.
    pub(crate) fn on_exit(&self, code: i32) {
        if let Some(path) = &self.control_path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pid_file) = &self.pid_file {
            if pid_file.exists() && pid_file::is_ours(pid_file, std::process::id()) {
                if let Err(e) = std::fs::remove_file(pid_file) {
                    self.logger.error(&format!(
                        "[master] delete pidfile {} fail with {}",
                        pid_file.display(),
                        e
                    ));
                }
            }
        }
        let msg = format!("[master] exit with code:{code}");
        if code == 0 {
            self.logger.info(&msg);
        } else {
            self.logger.error(&msg);
        }
    }
}

/// Starts the master: writes the pid file, finds the internal ports, then runs the cluster on
/// its own thread (which logs egg-cluster's start lines first).
pub(crate) fn start(
    opts: Options,
    launch: Launch,
    logger: Arc<Logger>,
    emit: Arc<dyn Emit>,
) -> Result<MasterHandle> {
    let start_time = now_ms();
    // What degrades the master at start, for the product log after the start lines.
    let mut warnings = Vec::new();
    let systemd = opts.settings.systemd.clone();
    // The new master of an upgrade takes the old one's sockets as it would systemd's.
    let inbound = upgrade::Inbound::take(&launch.env, &mut warnings);
    let listen_fds = if inbound.fds > 0 {
        inbound.fds
    } else {
        systemd.listen_fds
    };
    let inherited = ops::take_listen_fds(listen_fds, &mut warnings);
    if let Some(pid_file) = opts
        .pid_file
        .as_ref()
        .filter(|_| !upgrade::UpgradeHost::defers_pid_file(&inbound))
    {
        pid_file::write(pid_file, std::process::id())
            .map_err(|e| Error::io(format!("write pidFile {}", pid_file.display()), e))?;
    }
    let (cluster_port, sticky_worker_port) =
        crate::ports::internal_ports(&[opts.port, opts.debug_port], opts.sticky)?;
    let options_json = opts.worker_json(cluster_port, sticky_worker_port);
    tracing::debug!(
        base_dir = %opts.base_dir.display(),
        framework = %opts.framework.display(),
        workers = opts.workers,
        cluster_port,
        ?sticky_worker_port,
        "start"
    );
    let settings = &opts.settings;
    // Bound here, on the JS thread, so that a port in use fails `startCluster` at once.
    let metrics = opts
        .metrics
        .map(|addr| {
            match inherited
                .iter()
                .find(|s| s.port == addr.port() && addr.port() != 0)
            {
                Some(s) => s.fd.try_clone().map(std::net::TcpListener::from),
                None => std::net::TcpListener::bind(addr),
            }
            .map_err(|e| Error::io(format!("listen on options.metrics {addr}"), e))
        })
        .transpose()?;
    let cfg = core::Config {
        workers: opts.workers,
        framework_name: opts.framework_name.clone(),
        framework_version: opts.framework_version.clone(),
        node_version: launch.node_version.clone(),
        is_production: opts.is_production,
        verbose: if opts.verbose_debug {
            Level::Debug
        } else {
            Level::Info
        },
        env: opts.env.clone(),
        node_env: settings.node_env.clone(),
        options_shown: opts.to_json(),
        options_json: options_json.clone(),
        cluster_port,
        sticky: opts.sticky,
        sticky_worker_port,
        port: opts.port,
        debug_port: opts.debug_port,
        https: opts.https,
        host_env: settings.host.clone(),
        refork_limit: settings.refork_limit,
        refork_duration_ms: settings.refork_duration_ms,
        health_interval: settings.health_interval,
        app_close: settings.app_close_timeout.clone(),
        agent_close: settings.agent_close_timeout.clone(),
        fault_injection: settings.fault_injection,
        reload_timeout: settings.reload_timeout,
        // A boot is CPU-bound: one per CPU the master may use (std honours the cgroup quota)
        // overlaps them without slicing a CPU between boots (docs/reload.md).
        reload_concurrency: opts.reload_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        max_memory: opts.max_memory_restart,
        memory_check_interval: Some(opts.memory_check_interval),
        is_debug: opts.is_debug,
        dialect: opts.dialect,
        egg: opts.egg.clone(),
        threads: opts.threads,
        slot_ports: if opts.threads {
            opts.ports.clone()
        } else {
            Vec::new()
        },
        metrics_addr: metrics.as_ref().and_then(|l| l.local_addr().ok()),
        shutdown_delay: opts.shutdown_delay,
        worker_timeout: opts.worker_timeout,
        heartbeat_interval: hung::heartbeat_interval(opts.worker_timeout),
        start_timeout: settings.start_timeout,
        upgrade_timeout: settings.upgrade_timeout,
        is_pid1: std::process::id() == 1,
        max_workers: opts.max_workers,
        inherited_workers: inbound.workers,
    };
    let reports = hung::Reports::new(&opts.base_dir);

    let control = control::bind(&launch.env, std::process::id(), &mut warnings);
    let control_path = control.as_ref().map(|c| c.path.clone());
    let ops_runtime = ops::OpsRuntime::new(systemd.notify_socket.as_deref(), &mut warnings);
    let master_launch = upgrade::MasterLaunch {
        exec_path: launch.exec_path.clone(),
        args: launch.master_args.clone(),
        cwd: launch.cwd.clone(),
        env: launch.env.clone(),
        has_parent: launch.has_parent,
    };
    let mut env = launch.env.clone();
    env.retain(|(k, _)| {
        !crate::ops::systemd::CHILD_ENV_REMOVED.contains(&k.as_str())
            && !crate::process::spawn::UPGRADE_VARS.contains(&k.as_str())
    });
    if settings.node_env.as_deref() == Some("production") {
        // egg-cluster sets this on its own process.env, so its children inherit it.
        env.retain(|(k, _)| k != "NO_DEPRECATION");
        env.push(("NO_DEPRECATION".into(), "*".into()));
    }

    // The workers load egg through this package as their framework (index.js re-exports it):
    // the egg found here is the one they get.
    if let Some(egg) = &opts.egg {
        env.retain(|(k, _)| k != "EGG_CLUSTER_RS_EGG");
        env.push((
            "EGG_CLUSTER_RS_EGG".into(),
            egg.dir.to_string_lossy().into_owned(),
        ));
    }
    // lib/compile_cache.js enables it there (and takes the variable out of the worker's env).
    env.retain(|(k, _)| k != "EGG_CLUSTER_RS_COMPILE_CACHE_DIR");
    if let Some(dir) = &opts.compile_cache {
        env.push((
            "EGG_CLUSTER_RS_COMPILE_CACHE_DIR".into(),
            dir.to_string_lossy().into_owned(),
        ));
    }
    let tree_marker = (!opts.threads)
        .then(crate::process::orphans::marker)
        .flatten();
    let marker_env = tree_marker
        .clone()
        .map(|m| (crate::process::orphans::VAR.to_string(), m));
    for (k, v) in reports
        .child_env(cfg.heartbeat_interval, cfg.worker_timeout)
        .into_iter()
        .chain(marker_env)
    {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    let mut launch = launch;
    if opts.dialect == core::Dialect::Egg4 {
        if let Some((agent, app)) = launch.egg4_worker_files.take() {
            launch.agent_worker_file = agent;
            launch.app_worker_file = app;
        }
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let runtime = Runtime {
        core: Core::new(cfg, start_time),
        children: children::Children::new(children::SpawnConfig {
            launch: Launch { env, ..launch },
            options_json,
            is_debug: opts.is_debug,
            agent_debug_port: settings.agent_debug_port,
            app_grace: settings
                .app_close_timeout
                .limit
                .min(crate::process::watchdog::APP_GRACE),
            agent_grace: settings.agent_close_timeout.limit,
            egg4: opts.dialect == core::Dialect::Egg4,
            logger: logger.clone(),
        }),
        handles: handles::Handles::new(opts.reuse_port, opts.is_production, inherited),
        sticky_key: opts.sticky_key.clone().map(|source| {
            Arc::new(sticky::StickyKey {
                source,
                trusted: opts.sticky_trusted.clone(),
            })
        }),
        accepting: Vec::new(),
        routes: Routes::default(),
        routes_seq: 0,
        logger: logger.clone(),
        emit,
        tx: tx.clone(),
        parent_connected: true,
        egg4: opts.dialect == core::Dialect::Egg4,
        master_pid: std::process::id(),
        ops: ops_runtime,
        threads: opts
            .threads
            .then(|| threads::ThreadHost::new(opts.ports.clone())),
        ops_start: Some(OpsStart {
            metrics,
            control,
            notify_socket: systemd.notify_socket,
            watchdog_usec: systemd.watchdog_usec,
            upgrade_timeout: settings.upgrade_timeout,
            warnings,
        }),
        backpressure: Default::default(),
        reports,
        upgrade: upgrade::UpgradeHost::new(master_launch, inbound, opts.pid_file.clone()),
        scrapes: Default::default(),
        waiters: Default::default(),
        tree_marker,
        oom: (!opts.threads).then(crate::process::oom::OomWatch::new),
    };
    std::thread::Builder::new()
        .name("egg-cluster-rs".into())
        .spawn(move || runtime.run(rx))
        .map_err(|e| Error::io("start the master thread", e))?;
    Ok(MasterHandle {
        tx,
        logger,
        pid_file: opts.pid_file.clone(),
        control_path,
    })
}

pub(super) struct OpsStart {
    pub(super) metrics: Option<std::net::TcpListener>,
    pub(super) control: Option<control::Bound>,
    pub(super) notify_socket: Option<String>,
    pub(super) watchdog_usec: Option<u64>,
    /// How long the control socket's `upgrade` may wait for the outcome.
    pub(super) upgrade_timeout: std::time::Duration,
    /// Product log lines (WARN) of what did not come up, written after the start lines.
    pub(super) warnings: Vec<String>,
}
