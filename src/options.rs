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
//! Apart from existence checks and reading `package.json` files (and the
//! cgroup files read by [`default_workers`]) nothing here touches the
//! outside world, which keeps it testable without a Node runtime.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

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
}

/// The validated options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Final options object, exactly what egg-cluster would hand to the
    /// workers. Unknown keys pass through untouched. Key order follows JS
    /// object semantics only when serde_json's `preserve_order` feature is
    /// enabled; without it `Map` is sorted by key.
    pub raw: Map<String, Value>,
    /// Absolute path of the framework directory.
    pub framework: PathBuf,
    /// `name` from the framework's package.json.
    pub framework_name: String,
    /// `version` from the framework's package.json.
    pub framework_version: String,
    /// Absolute application directory.
    pub base_dir: PathBuf,
    pub workers: usize,
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
    pub sticky_key: Option<crate::proxy::KeySource>,
    /// Proxies whose `stickyKey` is believed (`stickyTrustedProxies`, default loopback).
    pub sticky_trusted: Vec<crate::proxy::TrustedNet>,
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

    let workers = match raw.get("workers") {
        Some(v) if truthy(v) => parse_workers(v)?,
        _ => default_workers(input.host_cpus),
    };
    raw.set("workers", Value::from(workers as u64));

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

    let node_env = input.env.get("NODE_ENV").map(String::as_str);
    let is_production = match env.as_deref() {
        Some(e) => e != "local" && e != "unittest",
        None => node_env == Some("production"),
    };
    let verbose_debug = env.as_deref() == Some("local") || node_env == Some("development");

    Ok(Options {
        raw: raw.into_map(),
        framework,
        framework_name,
        framework_version,
        base_dir,
        workers,
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
    })
}

/// `stickyKey`: `"proxy-protocol"` (PROXY v1/v2), or the name of a request header carrying the
/// client address (`"x-forwarded-for"`, `"forwarded"`, ...). `stickyTrustedProxies`: addresses
/// or CIDRs of the proxies allowed to set it (default loopback only).
fn parse_sticky_key(
    raw: &JsObject,
) -> Result<
    (
        Option<crate::proxy::KeySource>,
        Vec<crate::proxy::TrustedNet>,
    ),
    OptionsError,
> {
    use crate::proxy::{KeySource, TrustedNet};
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

/// Number of workers to start when the user does not say: the host CPU
/// count, capped by the container's CPU quota so that a pod limited to two
/// CPUs on a 64-core node does not fork 64 workers.
pub fn default_workers(host_cpus: usize) -> usize {
    let cpu_max = cgroup_v2_cpu_max_files();
    let cpu_max: Vec<&str> = cpu_max.iter().map(String::as_str).collect();
    let (quota, period) = cgroup_v1_files();
    default_workers_from(host_cpus, &cpu_max, quota.as_deref(), period.as_deref())
}

/// Pure part of [`default_workers`].
///
/// `cpu_max` holds the contents of every cgroup v2 `cpu.max` file that
/// applies to the process (its own cgroup and its ancestors; the tightest
/// one wins). `cfs_quota_us`/`cfs_period_us` are the cgroup v1 files and
/// are only consulted when no v2 limit was found. Unparseable contents
/// count as "no limit" rather than an error: a broken cgroup file should
/// not prevent the cluster from starting.
pub fn default_workers_from(
    host_cpus: usize,
    cpu_max: &[&str],
    cfs_quota_us: Option<&str>,
    cfs_period_us: Option<&str>,
) -> usize {
    let v2 = cpu_max.iter().filter_map(|c| parse_cpu_max(c)).min();
    let limit = v2.or_else(|| {
        let quota = cfs_quota_us?.trim().parse::<i64>().ok()?;
        let period = cfs_period_us?.trim().parse::<i64>().ok()?;
        quota_cpus(quota, period)
    });
    let cpus = match limit {
        Some(limit) => host_cpus.min(limit),
        None => host_cpus,
    };
    cpus.max(1)
}

/// `"max 100000"` means unlimited; `"200000 100000"` means two CPUs.
fn parse_cpu_max(contents: &str) -> Option<usize> {
    let mut fields = contents.split_whitespace();
    let quota = fields.next()?;
    if quota == "max" {
        return None;
    }
    let quota = quota.parse::<i64>().ok()?;
    // The period may be omitted when written, but the kernel always reports
    // it; fall back to the kernel default just in case.
    let period = match fields.next() {
        Some(p) => p.parse::<i64>().ok()?,
        None => 100_000,
    };
    quota_cpus(quota, period)
}

/// ceil(quota / period), or `None` for "unlimited" (v1 uses -1) and for
/// nonsense values that would otherwise divide by zero.
fn quota_cpus(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    let cpus = (quota + period - 1) / period;
    usize::try_from(cpus).ok()
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every readable `cpu.max` from the process' own cgroup up to the mount
/// root. With a cgroup namespace (the usual container setup) the root *is*
/// the container's cgroup; without one (e.g. a systemd unit with
/// `CPUQuota=`) the limit sits on the path named in /proc/self/cgroup.
fn cgroup_v2_cpu_max_files() -> Vec<String> {
    let root = Path::new(CGROUP_ROOT);
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(self_cgroup) = fs::read_to_string("/proc/self/cgroup") {
        if let Some(rel) = self_cgroup
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
        {
            let mut dir = root.join(rel.trim_start_matches('/'));
            while dir.starts_with(root) && dir != root {
                dirs.push(dir.clone());
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join("cpu.max")).ok())
        .collect()
}

/// cgroup v1 quota and period from the usual mount points of the cpu
/// controller. Only the mount root is read: inside a v1 container the path
/// in /proc/self/cgroup refers to the host hierarchy and does not exist.
fn cgroup_v1_files() -> (Option<String>, Option<String>) {
    for dir in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
        let dir = Path::new(CGROUP_ROOT).join(dir);
        let quota = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
        let period = fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
        if quota.is_some() && period.is_some() {
            return (quota, period);
        }
    }
    (None, None)
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

/// egg-utils `getFrameworkPath()`.
fn resolve_framework(
    raw: &JsObject,
    base_dir: &Path,
    input: &OptionsInput,
) -> Result<PathBuf, OptionsError> {
    let pkg_path = base_dir.join("package.json");
    if !pkg_path.exists() {
        return Err(OptionsError::PackageJsonMissing(pkg_path));
    }
    // egg-utils parses the app's package.json even when it does not need
    // `egg.framework`, so a broken file is an error either way.
    let pkg = read_json(&pkg_path).map_err(|reason| OptionsError::InvalidPackageJson {
        path: pkg_path.clone(),
        reason,
    })?;

    // `options.framework || options.customEgg`
    let requested = ["framework", "customEgg"]
        .into_iter()
        .find_map(|key| raw.get(key).filter(|v| truthy(v)).map(|v| (key, v)));
    let name = match requested {
        Some((_, Value::String(s))) => {
            if Path::new(s).is_absolute() {
                return if Path::new(s).exists() {
                    Ok(PathBuf::from(s))
                } else {
                    Err(OptionsError::FrameworkMissing(s.clone()))
                };
            }
            s.clone()
        }
        Some((key, v)) => return Err(invalid(&format!("options.{key}"), "a string", v)),
        None => match pkg.get("egg").and_then(|e| e.get("framework")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v) if truthy(v) => {
                return Err(invalid(
                    &format!("{} egg.framework", pkg_path.display()),
                    "a string",
                    v,
                ))
            }
            _ => "egg".to_owned(),
        },
    };

    let dirs = module_dirs(base_dir, input);
    for dir in &dirs {
        let candidate = normalize(&dir.join(&name));
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(OptionsError::FrameworkNotFound {
        name,
        dirs: dirs
            .iter()
            .map(|d| path_string(d))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Where a framework name is looked up, in egg-utils' order, with
/// `require.resolve()` replaced by the directories Node itself would search
/// from egg-cluster-rs' own location. Duplicates are dropped like the JS
/// `Set` does.
fn module_dirs(base_dir: &Path, input: &OptionsInput) -> Vec<PathBuf> {
    let mut dirs = vec![
        base_dir.join("node_modules"),
        resolve(&input.cwd, Path::new("node_modules")),
        resolve(&input.init_cwd, Path::new("node_modules")),
    ];
    dirs.extend(node_module_paths(&resolve(&input.cwd, &input.package_dir)));
    // require.resolve() also honours NODE_PATH after the node_modules chain.
    if let Some(node_path) = input.env.get("NODE_PATH") {
        dirs.extend(
            node_path
                .split(':')
                .filter(|p| !p.is_empty())
                .map(|p| resolve(&input.cwd, Path::new(p))),
        );
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Node's `Module._nodeModulePaths(from)`: `<dir>/node_modules` for `from`
/// and each ancestor, skipping directories that are themselves called
/// `node_modules`.
fn node_module_paths(from: &Path) -> Vec<PathBuf> {
    from.ancestors()
        .filter(|dir| dir.file_name().is_none_or(|n| n != "node_modules"))
        .map(|dir| dir.join("node_modules"))
        .collect()
}

fn read_framework_package(framework: &Path) -> Result<(String, String), OptionsError> {
    let path = framework.join("package.json");
    let pkg = read_json(&path).map_err(|reason| OptionsError::FrameworkPackage { path, reason })?;
    // egg-cluster interpolates these straight into log lines, so a missing
    // field reads "undefined" there too.
    let field = |key: &str| match pkg.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => js_to_string(v),
        None => "undefined".to_owned(),
    };
    Ok((field("name"), field("version")))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    // Like utility.readJSONSync (JSON.parse), a leading BOM is an error.
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn invalid(name: &str, expected: &'static str, got: &Value) -> OptionsError {
    OptionsError::Invalid {
        name: name.to_owned(),
        expected,
        got: json_repr(got),
    }
}

fn json_repr(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| js_to_string(value))
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `path.resolve(base, p)`: absolute, with `.` and `..` removed lexically
/// (symlinks are not resolved, as in Node).
fn resolve(base: &Path, p: &Path) -> PathBuf {
    normalize(&base.join(p))
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                // Popping a root is a no-op, so `/..` stays `/` like in Node.
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// JS truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `parseInt(String(value), 10)`; NaN when there is no leading integer.
fn js_parse_int(value: &Value) -> f64 {
    let text = js_to_string(value);
    let text = text.trim_start_matches(is_js_whitespace);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return f64::NAN;
    }
    // Parsing the digit string as a float rounds exactly like JS does for
    // integers beyond 2^53.
    let magnitude = digits[..end].parse::<f64>().unwrap_or(f64::NAN);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The characters `parseInt` skips: ECMAScript WhiteSpace and
/// LineTerminator (which differ from Rust's `char::is_whitespace`, e.g.
/// for U+0085 and U+FEFF).
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// `String(value)` for JSON values.
fn js_to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number_to_string(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        // Array.prototype.join renders null/undefined elements as "".
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => js_to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// `Number.prototype.toString()`. Both Rust and JS print the shortest
/// round-tripping digits; they only disagree on when to switch to
/// exponent notation and on the `+` of positive exponents.
fn js_number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    let abs = n.abs();
    if (1e-6..1e21).contains(&abs) {
        return format!("{n}");
    }
    let exp = format!("{n:e}");
    match exp.split_once('e') {
        Some((mantissa, power)) if !power.starts_with('-') => format!("{mantissa}e+{power}"),
        _ => exp,
    }
}

/// An options object that keeps JS property order: integer-like keys first
/// in ascending order, then the rest in insertion order, with assignment to
/// an existing key keeping its position. Building it ourselves keeps the
/// order right regardless of how `serde_json::Map` is configured.
#[derive(Default)]
struct JsObject {
    entries: Vec<(String, Value)>,
}

impl JsObject {
    fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_owned(), value)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    fn into_map(self) -> Map<String, Value> {
        let (mut indices, named): (Vec<_>, Vec<_>) = self
            .entries
            .into_iter()
            .partition(|(k, _)| array_index(k).is_some());
        indices.sort_by_key(|(k, _)| array_index(k));
        indices.into_iter().chain(named).collect()
    }
}

/// A canonical array index ("0", "42", not "042" or "4294967295"), which
/// JS enumerates before every other string key.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "egg-cluster-rs-options-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn write(&self, rel: &str, contents: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
            fs::write(&path, contents).expect("write");
            path
        }

        fn framework(&self, dir: &str, name: &str, version: &str) -> PathBuf {
            self.write(
                &format!("{dir}/package.json"),
                &json!({ "name": name, "version": version }).to_string(),
            );
            self.0.join(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// An app at `<tmp>/app` with egg installed in its node_modules.
    fn app() -> TempDir {
        let tmp = TempDir::new();
        tmp.write("app/package.json", r#"{"name":"app"}"#);
        tmp.framework("app/node_modules/egg", "egg", "2.37.0");
        fs::create_dir_all(tmp.path().join("pkg")).expect("mkdir");
        tmp
    }

    fn input(tmp: &TempDir, options: Value) -> OptionsInput {
        let app = tmp.path().join("app");
        OptionsInput {
            options,
            env: HashMap::new(),
            cwd: app.clone(),
            init_cwd: app,
            package_dir: tmp.path().join("pkg"),
            exec_argv: Vec::new(),
            host_cpus: 4,
        }
    }

    fn parse_ok(input: OptionsInput) -> Options {
        match parse(input) {
            Ok(o) => o,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn parse_err(input: OptionsInput) -> String {
        match parse(input) {
            Ok(o) => panic!("expected an error, got {:?}", o.raw),
            Err(e) => e.to_string(),
        }
    }

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
    fn framework_absolute_path() {
        let tmp = app();
        let fw = tmp.framework("frameworks/yadan", "yadan", "1.0.0");
        let o = parse_ok(input(&tmp, json!({ "framework": path_string(&fw) })));
        assert_eq!(o.framework, fw);
        assert_eq!(o.framework_name, "yadan");
        assert_eq!(o.raw["framework"], path_string(&fw));

        let missing = path_string(&tmp.path().join("missing"));
        let err = parse_err(input(&tmp, json!({ "framework": missing.clone() })));
        assert_eq!(err, format!("{missing} should exist"));
    }

    #[test]
    fn framework_lookup_order() {
        let tmp = app();
        let cwd = tmp.path().join("cwd");
        let init = tmp.path().join("init");
        let pkg_nm = tmp.path().join("node_modules"); // an ancestor of package_dir
        tmp.framework("cwd/node_modules/a", "a-cwd", "1");
        tmp.framework("init/node_modules/a", "a-init", "1");
        tmp.framework("init/node_modules/b", "b-init", "1");
        tmp.framework("node_modules/b", "b-pkg", "1");
        tmp.framework("node_modules/c", "c-pkg", "1");
        tmp.framework("node_modules/@scope/d", "@scope/d", "2");
        tmp.framework("app/node_modules/a", "a-app", "1");

        let run = |name: &str| {
            let mut i = input(&tmp, json!({ "framework": name }));
            i.options["baseDir"] = json!(path_string(&tmp.path().join("app")));
            i.cwd = cwd.clone();
            i.init_cwd = init.clone();
            parse(i)
        };
        assert_eq!(run("a").expect("a").framework_name, "a-app");
        assert_eq!(run("b").expect("b").framework_name, "b-init");
        assert_eq!(run("c").expect("c").framework_name, "c-pkg");
        let d = run("@scope/d").expect("d");
        assert_eq!(d.framework, pkg_nm.join("@scope/d"));
        assert_eq!(d.framework_version, "2");

        fs::remove_dir_all(tmp.path().join("app/node_modules/a")).expect("rm");
        assert_eq!(run("a").expect("a").framework_name, "a-cwd");

        let err = run("zzz").expect_err("missing").to_string();
        let app_nm = tmp.path().join("app/node_modules");
        let prefix = format!(
            "zzz is not found in {},{},{},{},{}",
            app_nm.display(),
            cwd.join("node_modules").display(),
            init.join("node_modules").display(),
            tmp.path().join("pkg/node_modules").display(),
            pkg_nm.display(),
        );
        assert!(err.starts_with(&prefix), "{err}\n{prefix}");
        assert!(err.ends_with(",/node_modules"), "{err}");
    }

    #[test]
    fn framework_from_custom_egg_and_package_json() {
        let tmp = app();
        tmp.framework("app/node_modules/custom", "custom", "3");
        tmp.framework("app/node_modules/from-pkg", "from-pkg", "4");
        let o = parse_ok(input(
            &tmp,
            json!({ "framework": "", "customEgg": "custom" }),
        ));
        assert_eq!(o.framework_name, "custom");

        tmp.write(
            "app/package.json",
            r#"{"name":"app","egg":{"framework":"from-pkg"}}"#,
        );
        assert_eq!(parse_ok(input(&tmp, json!({}))).framework_name, "from-pkg");
        // An explicit framework still wins over package.json.
        let o = parse_ok(input(&tmp, json!({ "framework": "custom" })));
        assert_eq!(o.framework_name, "custom");

        let err = parse_err(input(&tmp, json!({ "framework": 5 })));
        assert_eq!(err, "options.framework should be a string, got 5");
    }

    #[test]
    fn node_path_is_searched_and_module_paths_skip_node_modules_dirs() {
        let tmp = app();
        tmp.framework("global/g", "g", "1");
        let mut i = input(&tmp, json!({ "framework": "g" }));
        i.env
            .insert("NODE_PATH".into(), path_string(&tmp.path().join("global")));
        assert_eq!(parse_ok(i).framework_name, "g");

        let paths = node_module_paths(Path::new("/a/node_modules/pkg"));
        let expected: Vec<PathBuf> = [
            "/a/node_modules/pkg/node_modules",
            "/a/node_modules",
            "/node_modules",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(paths, expected);
    }

    #[test]
    fn framework_package_json_problems() {
        let tmp = app();
        fs::create_dir_all(tmp.path().join("app/node_modules/nopkg")).expect("mkdir");
        let err = parse_err(input(&tmp, json!({ "framework": "nopkg" })));
        assert!(err.starts_with("options.framework: cannot read "), "{err}");

        tmp.write("app/node_modules/bare/package.json", "{}");
        let o = parse_ok(input(&tmp, json!({ "framework": "bare" })));
        assert_eq!(o.framework_name, "undefined");
        assert_eq!(o.framework_version, "undefined");
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
    fn cgroup_limits() {
        assert_eq!(default_workers_from(8, &[], None, None), 8);
        assert_eq!(default_workers_from(0, &[], None, None), 1);
        assert_eq!(default_workers_from(8, &["max 100000\n"], None, None), 8);
        assert_eq!(default_workers_from(8, &["200000 100000\n"], None, None), 2);
        assert_eq!(default_workers_from(8, &["150000 100000"], None, None), 2);
        assert_eq!(default_workers_from(8, &["50000 100000"], None, None), 1);
        assert_eq!(default_workers_from(2, &["800000 100000"], None, None), 2);
        // The tightest of several nested limits wins.
        assert_eq!(
            default_workers_from(
                16,
                &["max 100000", "400000 100000", "300000 100000"],
                None,
                None
            ),
            3
        );
        // v1 only applies when v2 gave nothing.
        assert_eq!(
            default_workers_from(8, &[], Some("300000\n"), Some("100000\n")),
            3
        );
        assert_eq!(
            default_workers_from(8, &[], Some("-1\n"), Some("100000\n")),
            8
        );
        assert_eq!(
            default_workers_from(8, &["max 100000"], Some("100000"), Some("100000")),
            1
        );
        // Garbage and zero periods are "no limit", never a panic.
        assert_eq!(
            default_workers_from(8, &["", "abc", "100 0"], Some("x"), Some("0")),
            8
        );
        assert_eq!(default_workers_from(8, &[], Some("100"), Some("0")), 8);
        assert!(default_workers(3) >= 1 && default_workers(3) <= 3);
    }

    #[test]
    fn js_helpers() {
        assert_eq!(js_number_to_string(1e21), "1e+21");
        assert_eq!(js_number_to_string(1.5e-7), "1.5e-7");
        assert_eq!(js_number_to_string(123.5), "123.5");
        assert_eq!(js_number_to_string(-0.0), "0");
        assert_eq!(js_parse_int(&json!("\u{feff}\u{3000}42")), 42.0);
        assert!(js_parse_int(&json!("\u{85}42")).is_nan());
        assert!(js_parse_int(&json!("-")).is_nan());
        assert!(js_parse_int(&json!("0x10")) == 0.0);
        // String([null, 1]) is ",1", which has no leading integer.
        assert!(js_parse_int(&json!([null, 1])).is_nan());
        assert_eq!(normalize(Path::new("/a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        assert_eq!(array_index("4294967295"), None);
        assert_eq!(array_index("00"), None);
    }
}
