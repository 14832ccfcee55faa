//! Option parsing and validation for `startCluster(options)`.
//!
//! This mirrors egg-cluster 2.x `lib/utils/options.js` together with
//! egg-utils `getFrameworkPath`, so that workers receive the same options
//! object (as `argv[2]` and in `egg-ready`) they would get from the JS
//! master. Deliberate differences:
//!
//! * invalid `port`, `workers` and `debugPort` values are rejected with an
//!   error naming the option instead of silently turning into `NaN`;
//! * the framework is never `require()`d here, so the Application/Agent
//!   assertions are left to the workers;
//! * egg-utils' `require.resolve()` fallback is replaced by Node's module
//!   lookup directories computed from `package_dir` (plus `NODE_PATH`);
//! * `baseDir` is stored as an absolute, lexically normalised path.
//!
//! The environment variables the master reads are parsed here too, once,
//! into [`Settings`]. Apart from existence checks and reading `package.json`
//! files (and the cgroup files that cap the default worker count) nothing
//! here touches the outside world, which keeps it testable without a Node
//! runtime.

mod cgroup;
mod compile_cache;
mod engines;
mod framework;
mod js;
mod ops;
mod settings;
mod systemd;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client_key::{KeySource, TrustedNet};
use cgroup::default_workers;
use framework::{read_framework_package, resolve_egg, resolve_framework};
pub use framework::{Dialect, Egg};
use js::{js_parse_int, json_repr, path_string, resolve, truthy, JsObject};
pub use settings::{CloseTimeout, Settings};

/// Everything [`parse`] needs from the JS side, captured once so that
/// parsing never reads the (mutable) process state behind Node's back.
#[derive(Debug, Clone)]
pub struct OptionsInput {
    /// What the user passed to `startCluster`, already JSON-roundtripped.
    pub options: Value,
    /// Snapshot of `process.env`.
    pub env: HashMap<String, String>,
    /// `process.cwd()` now.
    pub cwd: PathBuf,
    /// `process.cwd()` when the addon was loaded (egg-utils' `initCwd`).
    pub init_cwd: PathBuf,
    /// Directory of egg-cluster-rs' `index.js`; Node's module lookup walks
    /// up from here.
    pub package_dir: PathBuf,
    /// `process.execArgv`.
    pub exec_argv: Vec<String>,
    /// `os.cpus().length`.
    pub host_cpus: usize,
    /// `process.version` (the workers run the same `node`).
    pub node_version: String,
}

/// The validated options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Final options object, exactly what egg-cluster would hand to the
    /// workers. Unknown keys pass through untouched. Key order follows JS
    /// object semantics only when serde_json's `preserve_order` feature is
    /// enabled; without it `Map` is sorted by key. Read it through
    /// [`Options::to_json`] and [`Options::worker_json`]; it is still
    /// `pub(crate)` only because runtime.rs reaches in until it switches to those.
    raw: Map<String, Value>,
    /// Absolute path of the framework directory.
    pub framework: PathBuf,
    /// `name` from the framework's package.json.
    pub framework_name: String,
    /// `version` from the framework's package.json.
    pub framework_version: String,
    /// The egg the app runs on (see [`framework::resolve_egg`]), and the protocol its workers
    /// speak.
    pub egg: Option<Egg>,
    pub dialect: Dialect,
    /// Where the workers keep V8's compile cache; `None`: off, or the user's own (see
    /// [`compile_cache::dir`]).
    pub compile_cache: Option<PathBuf>,
    /// Absolute application directory.
    pub base_dir: PathBuf,
    pub workers: usize,
    /// The most app workers scaling may ask for: `EGG_CLUSTER_RS_MAX_WORKERS`, else four per
    /// CPU the master may use, or `workers` if that is more.
    pub max_workers: usize,
    pub port: Option<u16>,
    pub https: bool,
    pub sticky: bool,
    pub env: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub is_debug: bool,
    pub debug_port: Option<u16>,
    /// egg-cluster's `isProduction()`.
    pub is_production: bool,
    /// egg-cluster logs through `debug` instead of `info` in this case.
    pub verbose_debug: bool,
    /// Sticky mode behind proxies: where the client key comes from (`stickyKey`).
    pub sticky_key: Option<KeySource>,
    /// Proxies whose `stickyKey` is believed (`stickyTrustedProxies`, default loopback).
    pub sticky_trusted: Vec<TrustedNet>,
    /// `reusePort` is JSON `true` (merely truthy is not enough): one `SO_REUSEPORT` socket
    /// per worker instead of one shared socket.
    pub reuse_port: bool,
    /// `maxMemoryRestart`: an app worker whose RSS goes over this many bytes is replaced.
    pub max_memory_restart: Option<u64>,
    /// `memoryCheckInterval`: how often the RSS is sampled (default 30 s).
    pub memory_check_interval: Duration,
    /// `shutdownDelay` (else `EGG_CLUSTER_RS_SHUTDOWN_DELAY`, else 0): how long the workers
    /// serve on after SIGTERM, not ready, before the close.
    pub shutdown_delay: Duration,
    /// `reloadConcurrency` (else `EGG_CLUSTER_RS_RELOAD_CONCURRENCY`; `None`: the CPUs the
    /// master may use): how many replacements a rolling reload boots at once.
    pub reload_concurrency: Option<usize>,
    /// `workerTimeout` (else `EGG_CLUSTER_RS_WORKER_TIMEOUT`, else 60 s; 0 turns it off): a
    /// serving child whose event loop gave no sign of life this long is hung.
    pub worker_timeout: Option<Duration>,
    /// The environment variables the master reads, parsed.
    pub settings: Settings,
    /// `metrics: { port, host }`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics: Option<std::net::SocketAddr>,
    /// `startMode: 'worker_threads'`: the agent and the app workers are threads of the master.
    pub threads: bool,
    /// `ports`: in worker_threads mode, app thread `i` listens on `ports[i]`.
    pub ports: Vec<u16>,
}

impl Options {
    /// The options object as logged at start.
    pub fn to_json(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// The options object the workers get: the logged one plus the ports the master picked.
    /// A key the user already set keeps its place and takes the new value, as in egg-cluster.
    pub fn worker_json(&self, cluster_port: u16, sticky_worker_port: Option<u16>) -> String {
        let mut raw = self.raw.clone();
        raw.insert("clusterPort".into(), cluster_port.into());
        if let Some(port) = sticky_worker_port {
            raw.insert("stickyWorkerPort".into(), port.into());
        }
        Value::Object(raw).to_string()
    }
}

#[derive(thiserror::Error, Debug)]
pub enum OptionsError {
    #[error("options should be an object, got {got}")]
    NotAnObject { got: String },
    /// `name` is the full dotted name, e.g. `options.workers`.
    #[error("{name} should be {expected}, got {got}")]
    Invalid {
        name: String,
        expected: &'static str,
        got: String,
    },
    #[error("{} should exist", .0.display())]
    PackageJsonMissing(PathBuf),
    #[error("{} should be valid JSON: {reason}", .path.display())]
    InvalidPackageJson { path: PathBuf, reason: String },
    /// The field is `key`, `cert` or `ca`; the wording is egg-cluster's.
    #[error("options.https.{0} should exists")]
    HttpsFileMissing(&'static str),
    /// An absolute framework path that does not exist.
    #[error("{0} should exist")]
    FrameworkMissing(String),
    #[error("{name} is not found in {dirs}")]
    FrameworkNotFound { name: String, dirs: String },
    #[error("options.framework: cannot read {}: {reason}", .path.display())]
    FrameworkPackage { path: PathBuf, reason: String },
    /// A valid value of `name` that this master does not implement yet.
    #[error("{name} {value} is not supported yet: {hint}")]
    Unsupported {
        name: &'static str,
        value: String,
        hint: &'static str,
    },
    /// Two options that cannot go together.
    #[error("{name} cannot be used {with}: {reason}")]
    Conflict {
        name: &'static str,
        with: &'static str,
        reason: &'static str,
    },
    /// An environment variable set to something that cannot be used; `name` is the variable.
    #[error("{name} should be {expected}, got {got}")]
    InvalidEnv {
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("options.workers ({workers}) is over EGG_CLUSTER_RS_MAX_WORKERS ({max}): raise the variable, or run fewer workers")]
    WorkersOverMax { workers: usize, max: usize },
    /// The app's egg (or a package along its chain) declares a Node.js this is not.
    #[error("egg {version} ({}) needs Node.js {range} (engines.node of its package.json); this is Node.js {node}", .dir.display())]
    NodeVersion {
        dir: PathBuf,
        version: String,
        range: String,
        node: String,
    },
}

/// Parses and validates the options like egg-cluster's `options.js`.
pub fn parse(mut input: OptionsInput) -> Result<Options, OptionsError> {
    let user = match std::mem::take(&mut input.options) {
        Value::Object(map) => map,
        // `startCluster()`: egg-cluster dies with a TypeError on
        // `options.https`; starting with the defaults is friendlier.
        Value::Null => Map::new(),
        other => {
            return Err(OptionsError::NotAnObject {
                got: json_repr(&other),
            })
        }
    };
    let settings = Settings::from_env(&input.env)?;

    let user_https = user.get("https").unwrap_or(&Value::Null);
    let mut raw = JsObject::default();
    raw.set("framework", Value::from(""));
    raw.set("baseDir", Value::from(path_string(&input.cwd)));
    raw.set(
        "port",
        if truthy(user_https) {
            Value::from(8443)
        } else {
            Value::Null
        },
    );
    raw.set("reusePort", Value::Bool(false));
    raw.set("workers", Value::Null);
    raw.set("plugins", Value::Null);
    raw.set("https", Value::Bool(false));
    raw.set("startMode", Value::from("process"));
    raw.set("ports", Value::Array(Vec::new()));
    raw.set("env", Value::Null);

    // egg-cluster's `extend()`: only non-null user values win.
    for (key, value) in user {
        // JS assigns `target.__proto__ = x` to the prototype, so such a key
        // never becomes an own (serialised) property.
        if key == "__proto__" || value.is_null() {
            continue;
        }
        raw.set(&key, value);
    }

    let threads = parse_start_mode(raw.get("startMode"))?;
    let ports = parse_ports(raw.get("ports"))?;

    let workers_given = match raw.get("workers") {
        Some(v) if truthy(v) => Some(parse_workers(v)?),
        _ => None,
    };
    // egg-cluster's worker_threads mode runs one app thread per entry of `ports` (default
    // `[port]`: one thread) and ignores `workers`. Here an explicit `workers` without `ports`
    // runs that many threads on the one port: they listen through the master like processes do.
    let workers = match (threads, workers_given) {
        (true, _) if !ports.is_empty() => ports.len(),
        (true, Some(n)) => n,
        (true, None) => 1,
        (false, Some(n)) => n,
        (false, None) => default_workers(input.host_cpus),
    };
    raw.set("workers", Value::from(workers as u64));
    let max_workers = match settings.max_workers {
        Some(max) if workers > max => return Err(OptionsError::WorkersOverMax { workers, max }),
        Some(max) => max,
        None => workers.max(MAX_WORKERS_PER_CPU * default_workers(input.host_cpus)),
    };

    if !raw.get("env").is_some_and(truthy) {
        if let Some(server_env) = input.env.get("EGG_SERVER_ENV").filter(|s| !s.is_empty()) {
            raw.set("env", Value::from(server_env.as_str()));
        }
    }
    let env = match raw.get("env") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(v) if truthy(v) => return Err(invalid("options.env", "a string", v)),
        _ => None,
    };

    let base_dir = match raw.get("baseDir") {
        Some(Value::String(s)) => resolve(&input.cwd, Path::new(s)),
        Some(v) => return Err(invalid("options.baseDir", "a string", v)),
        None => input.cwd.clone(),
    };
    raw.set("baseDir", Value::from(path_string(&base_dir)));

    let framework = resolve_framework(&raw, &base_dir, &input)?;
    raw.set("framework", Value::from(path_string(&framework)));
    let (framework_name, framework_version) = read_framework_package(&framework)?;
    let (egg, dialect) = resolve_egg(&framework, &framework_name, &base_dir, &input);
    if let Some(egg) = &egg {
        check_node(egg, &input.node_version)?;
    }
    let compile_cache = compile_cache::dir(&base_dir, egg.as_ref(), &input.env);

    let https = raw.get("https").is_some_and(truthy);
    if https {
        let https_value = match raw.get("https") {
            // Legacy `https: true` with top-level key/cert. Missing values
            // are dropped, as JSON.stringify drops `undefined`.
            Some(Value::Bool(true)) => {
                let mut obj = Map::new();
                for field in ["key", "cert"] {
                    if let Some(v) = raw.get(field).filter(|v| !v.is_null()) {
                        obj.insert(field.to_owned(), v.clone());
                    }
                }
                Value::Object(obj)
            }
            Some(v) => v.clone(),
            None => Value::Null,
        };
        check_https_files(&https_value, &input.cwd)?;
        raw.set("https", https_value);
    }

    let port = match raw.get("port") {
        Some(v) => parse_port("options.port", v)?,
        None => None,
    };
    match port {
        Some(p) => raw.set("port", Value::from(p)),
        // `parseInt(...) || undefined` makes the key vanish from the JSON.
        None => raw.remove("port"),
    }

    if let Some(req) = raw.get("require").filter(|v| truthy(v)) {
        // `[].concat(x)` keeps arrays as they are and wraps anything else.
        let wrapped = match req {
            Value::Array(_) => req.clone(),
            other => Value::Array(vec![other.clone()]),
        };
        raw.set("require", wrapped);
    }

    let debug_port = match raw.get("debugPort") {
        Some(v) => parse_port("options.debugPort", v)?,
        None => None,
    };

    let debugger_attached = input
        .exec_argv
        .iter()
        .any(|a| a.contains("--debug") || a.contains("--inspect"));
    if debugger_attached {
        raw.set("isDebug", Value::Bool(true));
    }
    let is_debug = raw.get("isDebug").is_some_and(truthy);

    let sticky = raw.get("sticky").is_some_and(truthy);
    let (sticky_key, sticky_trusted) = parse_sticky_key(&raw)?;
    let pid_file = match raw.get("pidFile") {
        Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
        Some(v) if truthy(v) => return Err(invalid("options.pidFile", "a string", v)),
        _ => None,
    };

    let node_env = settings.node_env.as_deref();
    let is_production = match env.as_deref() {
        Some(e) => e != "local" && e != "unittest",
        None => node_env == Some("production"),
    };
    let verbose_debug = env.as_deref() == Some("local") || node_env == Some("development");

    let reuse_port = raw
        .get("reusePort")
        .is_some_and(|v| v.as_bool() == Some(true));
    let max_memory_restart = match raw.get("maxMemoryRestart") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_bytes(v).ok_or_else(|| {
            invalid(
                "options.maxMemoryRestart",
                "a positive number of bytes or a size like '512M'",
                v,
            )
        })?),
    };
    let memory_check_interval = match raw.get("memoryCheckInterval") {
        None | Some(Value::Null) => Duration::from_secs(30),
        Some(v) => v
            .as_u64()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| invalid("options.memoryCheckInterval", "a positive integer (ms)", v))?,
    };

    let shutdown_delay = match raw.get("shutdownDelay") {
        None | Some(Value::Null) => settings.shutdown_delay.unwrap_or(Duration::ZERO),
        Some(v) => v
            .as_u64()
            .map(Duration::from_millis)
            .ok_or_else(|| invalid("options.shutdownDelay", "a non-negative integer (ms)", v))?,
    };
    let reload_concurrency = match raw.get("reloadConcurrency") {
        None | Some(Value::Null) => settings.reload_concurrency,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("options.reloadConcurrency", "a positive integer", v))?,
        ),
    };
    let worker_timeout = match raw.get("workerTimeout") {
        None | Some(Value::Null) => settings
            .worker_timeout_ms
            .unwrap_or(DEFAULT_WORKER_TIMEOUT_MS),
        Some(v) => v.as_u64().ok_or_else(|| {
            invalid(
                "options.workerTimeout",
                "a non-negative integer (ms), 0 turns it off",
                v,
            )
        })?,
    };
    let worker_timeout = (worker_timeout > 0).then(|| Duration::from_millis(worker_timeout));

    let metrics = ops::parse_metrics(raw.get("metrics"))?;
    if threads && max_memory_restart.is_some() {
        // A thread's memory is the master process's: there is no RSS of its own to watch.
        return Err(OptionsError::Conflict {
            name: "options.maxMemoryRestart",
            with: "with startMode 'worker_threads'",
            reason: "app threads share the master's memory; use startMode 'process'",
        });
    }
    if threads && is_debug {
        // Node cannot attach an inspector port to a worker thread from its execArgv.
        return Err(OptionsError::Conflict {
            name: "options.startMode 'worker_threads'",
            with: "with a debugger (isDebug)",
            reason:
                "worker threads get no inspector port of their own; debug with startMode 'process'",
        });
    }

    Ok(Options {
        raw: raw.into_map(),
        framework,
        framework_name,
        framework_version,
        egg,
        compile_cache,
        dialect,
        base_dir,
        workers,
        max_workers,
        port,
        https,
        sticky,
        env,
        pid_file,
        is_debug,
        debug_port,
        is_production,
        verbose_debug,
        sticky_key,
        sticky_trusted,
        reuse_port,
        max_memory_restart,
        memory_check_interval,
        shutdown_delay,
        reload_concurrency,
        worker_timeout,
        settings,
        metrics,
        threads,
        ports,
    })
}

/// The bound on scaling without `EGG_CLUSTER_RS_MAX_WORKERS`: egg's default is a worker per
/// CPU; four leave room for I/O-bound apps, while a runaway `scale up` loop stops long before
/// the memory does (an egg worker is 60-100 MiB of RSS).
const MAX_WORKERS_PER_CPU: usize = 4;

/// Puma's `worker_timeout`: long enough that no sane request handler, GC pause or synchronous
/// start-up step in a serving worker comes near it, short enough that a stuck worker does not
/// hold its share of connections for minutes.
const DEFAULT_WORKER_TIMEOUT_MS: u64 = 60_000;

/// `maxMemoryRestart`: bytes, or a size with a K/M/G suffix (PM2's `max_memory_restart`).
fn parse_bytes(v: &Value) -> Option<u64> {
    let bytes = match v {
        Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0)? as u64,
        Value::String(s) => {
            let s = s.trim();
            let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((i, _)) => (&s[..i], s[i..].trim()),
                None => (s, ""),
            };
            let scale: u64 = match unit.to_ascii_uppercase().as_str() {
                "" | "B" => 1,
                "K" | "KB" => 1 << 10,
                "M" | "MB" => 1 << 20,
                "G" | "GB" => 1 << 30,
                _ => return None,
            };
            let num: f64 = num.trim().parse().ok().filter(|f: &f64| f.is_finite())?;
            (num * scale as f64) as u64
        }
        _ => return None,
    };
    (bytes > 0).then_some(bytes)
}

/// `stickyKey`: `"proxy-protocol"` (PROXY v1/v2), or the name of a request header carrying the
/// client address (`"x-forwarded-for"`, `"forwarded"`, ...). `stickyTrustedProxies`: addresses
/// or CIDRs of the proxies allowed to set it (default loopback only).
fn parse_sticky_key(raw: &JsObject) -> Result<(Option<KeySource>, Vec<TrustedNet>), OptionsError> {
    let key = match raw.get("stickyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("proxy-protocol") => {
            Some(KeySource::ProxyProtocol)
        }
        Some(Value::String(s))
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
        {
            Some(KeySource::Header { name: s.clone() })
        }
        Some(v) => {
            return Err(invalid(
                "options.stickyKey",
                "\"proxy-protocol\" or a header name such as \"x-forwarded-for\"",
                v,
            ))
        }
    };
    let trusted = match raw.get("stickyTrustedProxies") {
        None | Some(Value::Null) => vec!["127.0.0.1".parse(), "::1".parse()]
            .into_iter()
            .collect::<Result<Vec<TrustedNet>, _>>()
            .unwrap_or_default(),
        Some(Value::Array(items)) => {
            let mut nets = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let net = item
                    .as_str()
                    .and_then(|s| s.parse::<TrustedNet>().ok())
                    .ok_or_else(|| {
                        invalid(
                            &format!("options.stickyTrustedProxies[{i}]"),
                            "an IP address or CIDR",
                            item,
                        )
                    })?;
                nets.push(net);
            }
            nets
        }
        Some(v) => {
            return Err(invalid(
                "options.stickyTrustedProxies",
                "an array of IP addresses or CIDRs",
                v,
            ))
        }
    };
    Ok((key, trusted))
}

/// egg 4.1 needs Node >= 22.18 and, on an older one, crashes deep in its own loading: the start
/// is refused at once, naming what the egg declares. A range that cannot be read is no
/// requirement.
fn check_node(egg: &Egg, node: &str) -> Result<(), OptionsError> {
    for (dir, version, range) in &egg.needs_node {
        if engines::satisfies(range, node) == Some(false) {
            return Err(OptionsError::NodeVersion {
                dir: dir.clone(),
                version: version.clone(),
                range: range.clone(),
                node: node.to_owned(),
            });
        }
    }
    Ok(())
}

/// The one place that decides which `startMode`s run (`true`: worker_threads). egg-cluster
/// silently runs anything but `'worker_threads'` as `'process'`; a typo here would then go
/// unnoticed.
fn parse_start_mode(value: Option<&Value>) -> Result<bool, OptionsError> {
    match value {
        // A null value never reaches here (extend skips it): the default `'process'` stays.
        None => Ok(false),
        Some(Value::String(s)) if s == "process" => Ok(false),
        Some(Value::String(s)) if s == "worker_threads" => Ok(true),
        Some(v) => Err(invalid(
            "options.startMode",
            "'process' or 'worker_threads'",
            v,
        )),
    }
}

/// `ports`: an array of ports (egg-cluster reads it in worker_threads mode only, but a bad
/// one is an error in either mode).
fn parse_ports(value: Option<&Value>) -> Result<Vec<u16>, OptionsError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid(&format!("options.ports[{i}]"), "a port number", item))
            })
            .collect(),
        Some(v) => Err(invalid("options.ports", "an array of port numbers", v)),
    }
}

fn parse_workers(value: &Value) -> Result<usize, OptionsError> {
    let n = js_parse_int(value);
    // NaN fails the first comparison; the upper bound just keeps the cast
    // meaningful (nobody forks four billion workers).
    if n >= 1.0 && n <= f64::from(u32::MAX) {
        Ok(n as usize)
    } else {
        Err(invalid("options.workers", "a positive integer", value))
    }
}

/// `parseInt(x, 10) || undefined`, then a range check egg-cluster lacks:
/// a port like 70000 would otherwise only fail later inside a worker.
fn parse_port(name: &str, value: &Value) -> Result<Option<u16>, OptionsError> {
    let n = js_parse_int(value);
    if n.is_nan() || n == 0.0 {
        return Ok(None);
    }
    if (1.0..=65535.0).contains(&n) {
        Ok(Some(n as u16))
    } else {
        Err(invalid(name, "an integer between 1 and 65535", value))
    }
}

fn check_https_files(https: &Value, cwd: &Path) -> Result<(), OptionsError> {
    let field = |name: &str| https.as_object().and_then(|o| o.get(name));
    for name in ["key", "cert"] {
        if !field(name).is_some_and(|v| file_exists(v, cwd)) {
            return Err(OptionsError::HttpsFileMissing(name));
        }
    }
    if let Some(ca) = field("ca").filter(|v| truthy(v)) {
        if !file_exists(ca, cwd) {
            return Err(OptionsError::HttpsFileMissing("ca"));
        }
    }
    Ok(())
}

/// `fs.existsSync(value)`: non-strings and empty strings simply don't
/// exist; relative paths are relative to the process' cwd.
fn file_exists(value: &Value, cwd: &Path) -> bool {
    match value {
        Value::String(s) if !s.is_empty() => cwd.join(s).exists(),
        _ => false,
    }
}

pub(crate) fn invalid(name: &str, expected: &'static str, got: &Value) -> OptionsError {
    OptionsError::Invalid {
        name: name.to_owned(),
        expected,
        got: json_repr(got),
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{app, input, input_env, parse_err, parse_ok};
    use super::*;
    use serde_json::json;

    fn map_preserves_order() -> bool {
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().map(String::as_str) == Some("b")
    }

    #[test]
    fn defaults() {
        let tmp = app();
        let o = parse_ok(input(&tmp, json!({})));
        let app_dir = tmp.path().join("app");
        assert_eq!(o.base_dir, app_dir);
        assert_eq!(o.framework, app_dir.join("node_modules/egg"));
        assert_eq!(o.framework_name, "egg");
        assert_eq!(o.framework_version, "2.37.0");
        assert_eq!(o.port, None);
        assert!(!o.https && !o.sticky && !o.is_debug);
        assert_eq!(o.env, None);
        assert_eq!(o.pid_file, None);
        assert_eq!(o.debug_port, None);
        assert_eq!(o.workers, default_workers(4));
        let expected = json!({
            "framework": path_string(&app_dir.join("node_modules/egg")),
            "baseDir": path_string(&app_dir),
            "reusePort": false,
            "workers": default_workers(4),
            "plugins": null,
            "https": false,
            "startMode": "process",
            "ports": [],
            "env": null,
        });
        assert_eq!(Value::Object(o.raw), expected);
    }

    #[test]
    fn null_options_mean_empty_object() {
        let tmp = app();
        assert_eq!(parse_ok(input(&tmp, Value::Null)).framework_name, "egg");
        assert_eq!(
            parse_err(input(&tmp, json!("x"))),
            "options should be an object, got \"x\""
        );
    }

    #[test]
    fn key_order_follows_js_semantics() {
        let tmp = app();
        let mut i = input(
            &tmp,
            json!({ "zeta": 1, "workers": 2, "10": "a", "alpha": true, "2": "b", "01": "c" }),
        );
        i.exec_argv = vec!["--inspect=9229".into()];
        let keys: Vec<String> = parse_ok(i).raw.keys().cloned().collect();
        if !map_preserves_order() {
            eprintln!("serde_json without preserve_order: key order not checked");
            return;
        }
        let expected = [
            "2",
            "10",
            "framework",
            "baseDir",
            "reusePort",
            "workers",
            "plugins",
            "https",
            "startMode",
            "ports",
            "env",
            "zeta",
            "alpha",
            "01",
            "isDebug",
        ];
        assert_eq!(keys, expected);
    }

    #[test]
    fn workers_get_the_logged_options_plus_the_picked_ports() {
        let tmp = app();
        let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        let worker = |o: &Options, sticky| -> Map<String, Value> {
            serde_json::from_str(&o.worker_json(7001, sticky)).expect("valid JSON")
        };

        let o = parse_ok(input(&tmp, json!({ "custom": 1 })));
        let Value::Object(logged) = o.to_json() else {
            panic!("not an object")
        };
        assert_eq!(logged, o.raw);
        assert!(!logged.contains_key("clusterPort"));
        let w = worker(&o, None);
        assert_eq!(w["clusterPort"], 7001);
        assert!(!w.contains_key("stickyWorkerPort"));
        let w = worker(&o, Some(7002));
        assert_eq!(w["stickyWorkerPort"], 7002);
        let mut rest = w.clone();
        rest.remove("clusterPort");
        rest.remove("stickyWorkerPort");
        assert_eq!(rest, logged);

        // A port key the user set keeps its place and takes the picked port; without a sticky
        // port the user's `stickyWorkerPort` passes through.
        let o = parse_ok(input(
            &tmp,
            json!({ "stickyWorkerPort": 1, "clusterPort": 2, "custom": 3 }),
        ));
        let w = worker(&o, Some(7002));
        assert_eq!(
            (&w["clusterPort"], &w["stickyWorkerPort"]),
            (&json!(7001), &json!(7002))
        );
        assert_eq!(worker(&o, None)["stickyWorkerPort"], 1);

        if !map_preserves_order() {
            eprintln!("serde_json without preserve_order: key order not checked");
            return;
        }
        let mut appended = keys(&logged);
        appended.extend(["clusterPort".to_owned(), "stickyWorkerPort".to_owned()]);
        let o = parse_ok(input(&tmp, json!({ "custom": 1 })));
        assert_eq!(keys(&worker(&o, Some(7002))), appended);
        let o = parse_ok(input(
            &tmp,
            json!({ "stickyWorkerPort": 1, "clusterPort": 2, "custom": 3 }),
        ));
        assert_eq!(keys(&worker(&o, Some(7002))), keys(&o.raw));
        let in_place = keys(&o.raw);
        let at = |k: &str| in_place.iter().position(|x| x == k);
        assert!(at("stickyWorkerPort") < at("clusterPort") && at("clusterPort") < at("custom"));
    }

    #[test]
    fn worker_timeout_option_env_and_default() {
        let tmp = app();
        let wt = |v: Value| parse(input(&tmp, v)).map(|o| o.worker_timeout);
        assert_eq!(wt(json!({})).unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(
            wt(json!({ "workerTimeout": 2500 })).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(wt(json!({ "workerTimeout": 0 })).unwrap(), None);
        for bad in [json!("60s"), json!(-1), json!(1.5)] {
            let e = wt(json!({ "workerTimeout": bad })).unwrap_err().to_string();
            assert!(e.starts_with("options.workerTimeout should be"), "{e}");
        }
        let mut i = input(&tmp, json!({}));
        i.env
            .insert("EGG_CLUSTER_RS_WORKER_TIMEOUT".into(), "0".into());
        assert_eq!(parse(i).unwrap().worker_timeout, None);
    }

    #[test]
    fn max_memory_restart_sizes() {
        let tmp = app();
        let parse_mem = |v: Value| {
            parse(input(&tmp, json!({ "maxMemoryRestart": v }))).map(|o| o.max_memory_restart)
        };
        assert_eq!(parse_mem(json!(1000)).unwrap(), Some(1000));
        assert_eq!(parse_mem(json!("512M")).unwrap(), Some(512 << 20));
        assert_eq!(parse_mem(json!("1.5G")).unwrap(), Some(3 << 29));
        assert_eq!(parse_mem(json!("64kb")).unwrap(), Some(64 << 10));
        for bad in [
            json!("lots"),
            json!(-1),
            json!("12X"),
            json!(0),
            json!(true),
        ] {
            let e = parse_mem(bad).unwrap_err().to_string();
            assert!(e.starts_with("options.maxMemoryRestart should be"), "{e}");
        }
        let e = parse(input(&tmp, json!({ "memoryCheckInterval": 0 })))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("options.memoryCheckInterval should be"),
            "{e}"
        );
    }

    #[test]
    fn shutdown_delay_from_the_option_else_the_env() {
        let tmp = app();
        let with = |options: Value, env: &[(&str, &str)]| {
            parse(input_env(&tmp, options, env)).map(|o| o.shutdown_delay)
        };
        assert_eq!(with(json!({}), &[]).unwrap(), Duration::ZERO);
        let env = [("EGG_CLUSTER_RS_SHUTDOWN_DELAY", "7000")];
        assert_eq!(with(json!({}), &env).unwrap(), Duration::from_secs(7));
        assert_eq!(
            with(json!({ "shutdownDelay": 3000 }), &env).unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(
            with(json!({ "shutdownDelay": 0 }), &env).unwrap(),
            Duration::ZERO
        );
        for bad in [json!(-1), json!("5s"), json!(1.5), json!(true)] {
            let e = with(json!({ "shutdownDelay": bad }), &[])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("options.shutdownDelay should be"), "{e}");
        }
        let e = with(json!({}), &[("EGG_CLUSTER_RS_SHUTDOWN_DELAY", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EGG_CLUSTER_RS_SHUTDOWN_DELAY"), "{e}");
    }

    #[test]
    fn reload_concurrency_from_the_option_else_the_env() {
        let tmp = app();
        let with = |options: Value, env: &[(&str, &str)]| {
            parse(input_env(&tmp, options, env)).map(|o| o.reload_concurrency)
        };
        assert_eq!(with(json!({}), &[]).unwrap(), None);
        let env = [("EGG_CLUSTER_RS_RELOAD_CONCURRENCY", "3")];
        assert_eq!(with(json!({}), &env).unwrap(), Some(3));
        assert_eq!(
            with(json!({ "reloadConcurrency": 1 }), &env).unwrap(),
            Some(1)
        );
        for bad in [json!(0), json!(-1), json!("2"), json!(1.5), json!(true)] {
            let e = with(json!({ "reloadConcurrency": bad }), &[])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("options.reloadConcurrency should be"), "{e}");
        }
    }

    #[test]
    fn max_workers_from_the_env_else_four_per_cpu() {
        let tmp = app();
        let with = |options: Value, env: &[(&str, &str)]| {
            parse(input_env(&tmp, options, env)).map(|o| (o.workers, o.max_workers))
        };
        let cpus = default_workers(4);
        assert_eq!(with(json!({}), &[]).unwrap(), (cpus, 4 * cpus));
        let many = 4 * cpus + 3;
        assert_eq!(with(json!({ "workers": many }), &[]).unwrap(), (many, many));
        let env = [("EGG_CLUSTER_RS_MAX_WORKERS", "6")];
        assert_eq!(with(json!({ "workers": 2 }), &env).unwrap(), (2, 6));
        let e = with(json!({ "workers": 7 }), &env).unwrap_err().to_string();
        assert_eq!(
            e,
            "options.workers (7) is over EGG_CLUSTER_RS_MAX_WORKERS (6): raise the variable, or run fewer workers"
        );
        for bad in ["0", "-1", "many", ""] {
            let e = with(json!({}), &[("EGG_CLUSTER_RS_MAX_WORKERS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("EGG_CLUSTER_RS_MAX_WORKERS should be"), "{e}");
        }
    }

    #[test]
    fn reuse_port_only_when_true() {
        let tmp = app();
        assert!(!parse_ok(input(&tmp, json!({}))).reuse_port);
        let reuse = |v: Value| parse_ok(input(&tmp, json!({ "reusePort": v }))).reuse_port;
        assert!(reuse(json!(true)));
        for v in [json!(false), json!(1), json!("true"), json!({})] {
            assert!(!reuse(v.clone()), "{v}");
        }
    }

    #[test]
    fn settings_come_from_the_env_snapshot() {
        let tmp = app();
        let mut i = input(&tmp, json!({}));
        i.env
            .insert("EGG_CLUSTER_RS_REFORK_LIMIT".into(), "7".into());
        assert_eq!(parse_ok(i).settings.refork_limit, 7);

        let mut i = input(&tmp, json!({}));
        i.env
            .insert("EGG_CLUSTER_RS_HEALTH_INTERVAL".into(), "abc".into());
        assert_eq!(
            parse_err(i),
            "EGG_CLUSTER_RS_HEALTH_INTERVAL should be a positive integer (ms), got \"abc\""
        );
    }

    #[test]
    fn extend_skips_null_and_passes_unknown_keys() {
        let tmp = app();
        let o = parse_ok(input(
            &tmp,
            json!({ "plugins": null, "startMode": null, "custom": { "a": [1] }, "reusePort": true, "__proto__": {"x": 1} }),
        ));
        assert_eq!(o.raw["plugins"], Value::Null);
        assert_eq!(o.raw["startMode"], "process");
        assert_eq!(o.raw["custom"], json!({ "a": [1] }));
        assert_eq!(o.raw["reusePort"], true);
        assert!(!o.raw.contains_key("__proto__"));
    }

    #[test]
    fn workers_parsing() {
        let tmp = app();
        let workers = |v: Value| parse(input(&tmp, json!({ "workers": v })));
        for (v, n) in [
            (json!(3), 3),
            (json!("5"), 5),
            (json!(" 6 workers"), 6),
            (json!(2.9), 2),
            (json!([7]), 7),
            (json!("+8"), 8),
        ] {
            let o = workers(v.clone()).expect("valid");
            assert_eq!(o.workers, n, "{v}");
            assert_eq!(o.raw["workers"], n, "{v}");
        }
        // Falsy values fall back to the CPU count.
        for v in [json!(0), json!(""), json!(false), json!(null)] {
            assert_eq!(workers(v).expect("valid").workers, default_workers(4));
        }
        for v in [
            json!("abc"),
            json!("0"),
            json!(-1),
            json!(true),
            json!({}),
            json!(0.5),
        ] {
            let err = workers(v.clone()).expect_err("invalid").to_string();
            assert_eq!(
                err,
                format!("options.workers should be a positive integer, got {v}")
            );
        }
        assert_eq!(
            workers(json!("abc")).expect_err("invalid").to_string(),
            "options.workers should be a positive integer, got \"abc\""
        );
    }

    #[test]
    fn port_parsing() {
        let tmp = app();
        let port = |v: Value| parse(input(&tmp, json!({ "port": v })));
        for (v, p) in [
            (json!(7001), Some(7001)),
            (json!("7002"), Some(7002)),
            (json!("7003abc"), Some(7003)),
            (json!(65535), Some(65535)),
            (json!(8080.7), Some(8080)),
            (json!(0), None),
            (json!("abc"), None),
            (json!(""), None),
            (json!(false), None),
            (json!(1e-7), Some(1)), // String(1e-7) is "1e-7"
            (json!(1e21), Some(1)), // String(1e21) is "1e+21"
        ] {
            let o = port(v.clone()).expect("valid");
            assert_eq!(o.port, p, "{v}");
            match p {
                Some(p) => assert_eq!(o.raw["port"], p),
                None => assert!(!o.raw.contains_key("port"), "{v}"),
            }
        }
        for v in [json!(65536), json!(-1), json!("70000"), json!(1e6)] {
            let err = port(v.clone()).expect_err("invalid").to_string();
            assert_eq!(
                err,
                format!("options.port should be an integer between 1 and 65535, got {v}")
            );
        }
    }

    #[test]
    fn debug_port_parsing() {
        let tmp = app();
        let o = parse_ok(input(&tmp, json!({ "debugPort": "9000" })));
        assert_eq!(o.debug_port, Some(9000));
        // Left as the user wrote it; only validated.
        assert_eq!(o.raw["debugPort"], "9000");
        let err = parse_err(input(&tmp, json!({ "debugPort": 99999 })));
        assert!(err.starts_with("options.debugPort should be"), "{err}");
    }

    #[test]
    fn env_handling() {
        let tmp = app();
        let mut i = input(&tmp, json!({}));
        i.env.insert("EGG_SERVER_ENV".into(), "prod".into());
        let o = parse_ok(i);
        assert_eq!(o.env.as_deref(), Some("prod"));
        assert_eq!(o.raw["env"], "prod");
        assert!(o.is_production);

        let mut i = input(&tmp, json!({ "env": "local" }));
        i.env.insert("EGG_SERVER_ENV".into(), "prod".into());
        i.env.insert("NODE_ENV".into(), "production".into());
        let o = parse_ok(i);
        assert_eq!(o.env.as_deref(), Some("local"));
        assert!(!o.is_production);
        assert!(o.verbose_debug);

        let o = parse_ok(input(&tmp, json!({ "env": "unittest" })));
        assert!(!o.is_production && !o.verbose_debug);

        // An empty env is falsy, so EGG_SERVER_ENV still wins.
        let mut i = input(&tmp, json!({ "env": "" }));
        i.env.insert("EGG_SERVER_ENV".into(), "test".into());
        assert_eq!(parse_ok(i).env.as_deref(), Some("test"));

        let mut i = input(&tmp, json!({}));
        i.env.insert("NODE_ENV".into(), "production".into());
        assert!(parse_ok(i).is_production);

        let mut i = input(&tmp, json!({}));
        i.env.insert("NODE_ENV".into(), "development".into());
        let o = parse_ok(i);
        assert!(!o.is_production && o.verbose_debug);

        assert!(parse_err(input(&tmp, json!({ "env": 1 }))).starts_with("options.env should"));
    }

    #[test]
    fn base_dir_and_package_json() {
        let tmp = app();
        // Relative baseDir is resolved against cwd.
        let mut i = input(&tmp, json!({ "baseDir": "./app/../app" }));
        i.cwd = tmp.path().to_path_buf();
        let o = parse_ok(i);
        assert_eq!(o.base_dir, tmp.path().join("app"));
        assert_eq!(o.raw["baseDir"], path_string(&tmp.path().join("app")));

        let missing = tmp.path().join("nope");
        let err = parse_err(input(&tmp, json!({ "baseDir": path_string(&missing) })));
        assert_eq!(
            err,
            format!("{} should exist", missing.join("package.json").display())
        );

        tmp.write("broken/package.json", "{");
        let err = parse_err(input(
            &tmp,
            json!({ "baseDir": path_string(&tmp.path().join("broken")) }),
        ));
        assert!(err.contains("should be valid JSON"), "{err}");

        let err = parse_err(input(&tmp, json!({ "baseDir": 1 })));
        assert_eq!(err, "options.baseDir should be a string, got 1");
    }

    #[test]
    fn https() {
        let tmp = app();
        let key = path_string(&tmp.write("app/key.pem", "k"));
        let cert = path_string(&tmp.write("app/cert.pem", "c"));

        let o = parse_ok(input(
            &tmp,
            json!({ "https": true, "key": key.clone(), "cert": cert.clone() }),
        ));
        assert!(o.https);
        assert_eq!(o.port, Some(8443));
        assert_eq!(
            o.raw["https"],
            json!({ "key": key.clone(), "cert": cert.clone() })
        );

        // Relative paths are checked against cwd; user port beats 8443.
        let o = parse_ok(input(
            &tmp,
            json!({ "https": { "key": "key.pem", "cert": "cert.pem", "ca": null }, "port": 443 }),
        ));
        assert_eq!(o.port, Some(443));
        assert_eq!(o.raw["https"]["key"], "key.pem");

        assert_eq!(
            parse_err(input(&tmp, json!({ "https": true, "cert": cert.clone() }))),
            "options.https.key should exists"
        );
        assert_eq!(
            parse_err(input(
                &tmp,
                json!({ "https": { "key": key.clone(), "cert": "missing.pem" } })
            )),
            "options.https.cert should exists"
        );
        assert_eq!(
            parse_err(input(
                &tmp,
                json!({ "https": { "key": key.clone(), "cert": cert.clone(), "ca": "nope" } })
            )),
            "options.https.ca should exists"
        );
        assert_eq!(
            parse_err(input(&tmp, json!({ "https": "yes" }))),
            "options.https.key should exists"
        );
        let o = parse_ok(input(&tmp, json!({ "https": false })));
        assert!(!o.https);
        assert_eq!(o.raw["https"], false);
    }

    #[test]
    fn require_sticky_pid_file_and_debug() {
        let tmp = app();
        let o = parse_ok(input(
            &tmp,
            json!({ "require": "a", "sticky": 1, "pidFile": "/tmp/x.pid" }),
        ));
        assert_eq!(o.raw["require"], json!(["a"]));
        assert!(o.sticky);
        assert_eq!(o.pid_file, Some(PathBuf::from("/tmp/x.pid")));

        let o = parse_ok(input(&tmp, json!({ "require": ["a", ["b"]] })));
        assert_eq!(o.raw["require"], json!(["a", ["b"]]));
        let o = parse_ok(input(&tmp, json!({ "require": "" })));
        assert_eq!(o.raw["require"], "");

        assert!(parse_err(input(&tmp, json!({ "pidFile": 3 }))).starts_with("options.pidFile"));

        let o = parse_ok(input(&tmp, json!({ "isDebug": true })));
        assert!(o.is_debug);
        let mut i = input(&tmp, json!({}));
        i.exec_argv = vec!["--max-old-space-size=100".into(), "--debug-brk".into()];
        let o = parse_ok(i);
        assert!(o.is_debug);
        assert_eq!(o.raw["isDebug"], true);
        let mut i = input(&tmp, json!({}));
        i.exec_argv = vec!["--expose-gc".into()];
        assert!(!parse_ok(i).raw.contains_key("isDebug"));
    }

    #[test]
    fn start_mode() {
        let tmp = app();
        assert_eq!(
            parse_ok(input(&tmp, json!({ "startMode": "process" }))).raw["startMode"],
            "process"
        );
        let threads = parse_ok(input(&tmp, json!({ "startMode": "worker_threads" })));
        assert!(threads.threads);
        assert_eq!(
            threads.workers, 1,
            "egg-cluster: one thread per port, default [port]"
        );
        let o = parse_ok(input(
            &tmp,
            json!({ "startMode": "worker_threads", "ports": [7001, 7002, 7003], "workers": 8 }),
        ));
        assert_eq!((o.workers, o.ports.clone()), (3, vec![7001, 7002, 7003]));
        assert_eq!(o.raw["workers"], 3);
        let o = parse_ok(input(
            &tmp,
            json!({ "startMode": "worker_threads", "workers": 4 }),
        ));
        assert_eq!(
            o.workers, 4,
            "explicit workers without ports: threads on one port"
        );
        assert!(!parse_ok(input(&tmp, json!({ "workers": 2 }))).threads);
        assert_eq!(
            parse_err(input(
                &tmp,
                json!({ "startMode": "worker_threads", "maxMemoryRestart": "1G" })
            )),
            "options.maxMemoryRestart cannot be used with startMode 'worker_threads': app \
             threads share the master's memory; use startMode 'process'"
        );
        for (bad, msg) in [
            (
                json!(7001),
                "options.ports should be an array of port numbers, got 7001",
            ),
            (
                json!([7001, "x"]),
                "options.ports[1] should be a port number, got \"x\"",
            ),
            (
                json!([70000]),
                "options.ports[0] should be a port number, got 70000",
            ),
        ] {
            assert_eq!(parse_err(input(&tmp, json!({ "ports": bad }))), msg);
        }
        for bad in [json!("thread"), json!(""), json!(1), json!(true)] {
            let err = parse_err(input(&tmp, json!({ "startMode": bad })));
            assert!(
                err.starts_with("options.startMode should be 'process' or 'worker_threads', got"),
                "{err}"
            );
        }
    }
}
