//! egg-cluster-rs: the Egg.js cluster master as a napi-rs addon.
//!
//! This file only wires the JS surface (`class Master`, error conversion, tracing set-up); the
//! architecture is in the modules:
//!
//! - [`options`]: egg-cluster's option defaults, validation and framework resolution.
//! - [`core`]: every decision and product log line — events in, actions out (pure).
//! - [`runtime`]: the master thread that performs the core's actions and turns I/O into events:
//!   children, relaying, listening sockets, sticky hand-over, shutdown.
//! - [`messenger`]: message routing between parent, master, agent and app workers (pure).
//! - [`protocol`]: the typed cluster and master messages; [`ipc`]: Node's IPC channel
//!   (framing, fd passing).
//! - [`process`]: spawning Node children, reaping them, terminating process trees;
//!   [`ports`], [`listen`]: the sockets the master binds.
//! - [`client_key`]: the sticky client address behind proxies (X-Forwarded-For, Forwarded,
//!   PROXY v1/v2).
//! - [`log`]: egg-logger's console format (product output), separate from `tracing`
//!   (diagnostics, off unless `EGG_CLUSTER_RS_LOG` is set).
#![deny(clippy::all)]

mod client_key;
mod core;
mod error;
mod ipc;
mod listen;
mod log;
mod messenger;
mod ops;
mod options;
mod ports;
mod process;
#[cfg(test)]
mod proptests;
mod protocol;
mod runtime;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use napi::bindgen_prelude::{FnArgs, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use crate::error::Error;
use crate::log::{Logger, LoggerConfig};
use crate::runtime::{Command, Emit, Launch, MasterHandle};

/// `err.code` for JS errors: the stable code of [`Error::code`].
pub struct Code(String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for Code {
    fn from(s: Status) -> Self {
        Code(s.as_ref().to_string())
    }
}

impl From<Error> for napi::Error<Code> {
    fn from(e: Error) -> Self {
        napi::Error::new(Code(e.code().to_string()), e.to_string())
    }
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Diagnostics only; the product's log lines go through `log`.
        if let Ok(filter) = std::env::var("EGG_CLUSTER_RS_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// What option parsing reads from the JS side.
#[napi(object)]
pub struct OptionsContext {
    /// `process.env`.
    pub env: HashMap<String, String>,
    /// `process.cwd()`.
    pub cwd: String,
    /// `process.cwd()` when the package was first loaded.
    pub init_cwd: String,
    /// The package's own directory; framework names are also looked up from here upwards.
    pub package_dir: String,
    /// `process.execArgv` (`--inspect`/`--debug` make `isDebug`).
    pub exec_argv: Vec<String>,
    /// `os.cpus().length`.
    pub cpus: u32,
}

fn options_input(
    options_json: &str,
    ctx: OptionsContext,
    node_version: &str,
) -> Result<options::OptionsInput, Error> {
    let options = serde_json::from_str(options_json).map_err(|source| Error::Json {
        what: "options",
        source,
    })?;
    Ok(options::OptionsInput {
        options,
        env: ctx.env,
        cwd: PathBuf::from(ctx.cwd),
        init_cwd: PathBuf::from(ctx.init_cwd),
        package_dir: PathBuf::from(ctx.package_dir),
        exec_argv: ctx.exec_argv,
        host_cpus: ctx.cpus as usize,
        node_version: node_version.to_owned(),
    })
}

/// How to run the children, from the JS side.
#[napi(object)]
pub struct LaunchContext {
    pub exec_path: String,
    /// The children's execArgv (the master's, minus `-e`/`-p <code>`).
    pub exec_argv: Vec<String>,
    /// Minutes east of UTC (`-new Date().getTimezoneOffset()`), for log timestamps.
    pub tz_offset_minutes: i32,
    /// Whether stdout supports colors (as chalk decides).
    pub color: bool,
    pub agent_worker_file: String,
    pub app_worker_file: String,
    /// egg 4's worker scripts, for an app on egg 4.
    pub egg4_agent_worker_file: Option<String>,
    pub egg4_app_worker_file: Option<String>,
    /// `process.version`.
    pub node_version: Option<String>,
    /// `process.debugPort`.
    pub debug_port: Option<u32>,
    /// `process.execArgv` then `process.argv.slice(1)`: what a new master (an upgrade) is
    /// started with.
    pub master_args: Option<Vec<String>>,
    /// `typeof process.send === 'function'`: the master has an IPC parent (an upgrade is then
    /// refused: the new master could not inherit the channel).
    pub has_parent: Option<bool>,
}

type EventFn =
    ThreadsafeFunction<FnArgs<(String, String)>, Unknown<'static>, FnArgs<(String, String)>>;

struct JsEmit(EventFn);

impl Emit for JsEmit {
    fn emit(&self, kind: &'static str, payload: String) {
        // Non-blocking: the master thread must never wait on a busy JS thread.
        self.0.call(
            Ok(FnArgs::from((kind.to_string(), payload))),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// A running master. Events reach JS through the constructor's callback as
/// `(err, kind, payload)`: `ready` (JSON of egg-ready's data), `parent` (a message for the
/// parent, JSON), `master` (a message addressed to the master, JSON), `exit` (the code).
#[napi]
pub struct Master {
    handle: MasterHandle,
}

#[napi]
impl Master {
    /// Validates `options_json` (what the user passed to `startCluster`) with egg-cluster's
    /// defaults and rules — throwing synchronously with `code: 'ERR_EGG_CLUSTER_OPTIONS'` and a
    /// message naming the option — then starts the cluster.
    #[napi(constructor)]
    pub fn new(
        options_json: String,
        context: OptionsContext,
        launch: LaunchContext,
        on_event: EventFn,
    ) -> napi::Result<Self, Code> {
        init_tracing();
        let env = context.env.clone();
        let cwd = PathBuf::from(&context.cwd);
        let node_version = launch.node_version.clone().unwrap_or_default();
        let opts = options::parse(options_input(&options_json, context, &node_version)?)
            .map_err(Error::from)?;
        let logger = Arc::new(Logger::new(LoggerConfig {
            level: opts.settings.logger_level.clone(),
            egg_log: opts.settings.egg_log.clone(),
            tz_offset_minutes: launch.tz_offset_minutes,
            color: launch.color,
        }));
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        let handle = runtime::start(
            opts,
            Launch {
                exec_path: launch.exec_path,
                exec_argv: launch.exec_argv,
                env,
                agent_worker_file: launch.agent_worker_file,
                app_worker_file: launch.app_worker_file,
                egg4_worker_files: launch
                    .egg4_agent_worker_file
                    .zip(launch.egg4_app_worker_file),
                debug_port: launch
                    .debug_port
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(9229),
                node_version: launch.node_version.unwrap_or_default(),
                master_args: launch.master_args.unwrap_or_default(),
                cwd,
                has_parent: launch.has_parent.unwrap_or(false),
            },
            logger,
            Arc::new(JsEmit(on_event)),
        )?;
        Ok(Master { handle })
    }

    /// SIGINT/SIGQUIT/SIGTERM reached the master (JS owns signal handling in Node).
    #[napi]
    pub fn on_signal(
        &self,
        signal: String,
        heap_limit: f64,
        heap_used: f64,
    ) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::Signal {
            name: signal,
            heap_limit,
            heap_used,
        })?)
    }

    /// Replace the app workers one at a time (`fromSignal`: SIGUSR2 reached the master, else
    /// the JS API asked). The outcome comes as a `reload-done` message on `promise.master`.
    #[napi]
    pub fn reload(&self, from_signal: bool) -> napi::Result<(), Code> {
        let reason = if from_signal {
            core::ReloadReason::Signal
        } else {
            core::ReloadReason::Api
        };
        Ok(self.handle.command(Command::Reload(reason))?)
    }

    /// Replace the whole tree (SIGHUP: `id` absent; `promise.upgrade()`: `id` set): a new
    /// master started with this one's command line takes the listening sockets over; the
    /// outcome comes as an `upgrade` event `{id, ok, pid | error}` for an `id`.
    #[napi]
    pub fn upgrade(&self, id: Option<u32>) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::Upgrade(id))?)
    }

    /// One more (`delta` 1, SIGTTIN) or one fewer (-1, SIGTTOU) app worker.
    #[napi]
    pub fn scale_by(&self, delta: i32) -> napi::Result<(), Code> {
        Ok(self
            .handle
            .command(Command::Scale(core::Scale::By(i64::from(delta))))?)
    }

    /// Run `workers` app workers (at least 1): new ones start, extra ones are drained.
    #[napi]
    pub fn scale_to(&self, workers: u32) -> napi::Result<(), Code> {
        Ok(self
            .handle
            .command(Command::Scale(core::Scale::To(workers as usize)))?)
    }

    /// Ask for a status snapshot; it comes back as a `status` event (JSON), in request order.
    #[napi]
    pub fn status(&self) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::Status)?)
    }

    /// A message from the master's parent process, as JSON.
    #[napi]
    pub fn from_parent(&self, message_json: String) -> napi::Result<(), Code> {
        Ok(self
            .handle
            .command(Command::FromParent(message_json.into_bytes()))?)
    }

    /// The parent's IPC channel closed: messages to the parent are dropped from now on.
    #[napi]
    pub fn parent_disconnected(&self) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::ParentDisconnected)?)
    }

    /// worker_threads mode: the `Worker` the master asked for (an event of kind `thread`, op
    /// `spawn`) was created with `thread_id`, or could not be (`error`).
    #[napi]
    pub fn thread_spawned(
        &self,
        role: String,
        id: u32,
        thread_id: Option<u32>,
        error: Option<String>,
    ) -> napi::Result<(), Code> {
        let role = match role.as_str() {
            "agent" => messenger::Role::Agent,
            _ => messenger::Role::App,
        };
        let result = thread_id.ok_or_else(|| error.unwrap_or_else(|| "no thread id".into()));
        Ok(self
            .handle
            .command(Command::ThreadSpawned { role, id, result })?)
    }

    /// A worker thread's `exit` event.
    #[napi]
    pub fn thread_exited(&self, thread_id: u32, code: i32) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::ThreadExited {
            tid: thread_id,
            code,
        })?)
    }

    /// A worker thread's `error` event: its uncaught exception, formatted by JS.
    #[napi]
    pub fn thread_error(&self, thread_id: u32, message: String) -> napi::Result<(), Code> {
        Ok(self.handle.command(Command::ThreadError {
            tid: thread_id,
            message,
        })?)
    }

    /// `process.on('exit')`: removes the pid file and logs the exit line, synchronously.
    #[napi]
    pub fn on_exit(&self, code: i32) {
        self.handle.on_exit(code);
    }
}
