//! The environment variables the master reads, parsed once by [`super::parse`], so that a bad
//! value stops the start with an error naming the variable before anything is spawned.
//!
//! The close timeouts keep egg-cluster's lenient handling: one that is not a number falls back to
//! the default, as `setTimeout` would. The other numbers are strict: a value that cannot be used
//! is an error rather than a default nobody notices.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::js::json_repr;
use super::OptionsError;

/// The master's environment, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `EGG_CLUSTER_RS_RELOAD_TIMEOUT`: how long a reload waits for a replacement to listen
    /// (default 60000 ms).
    pub reload_timeout: Duration,
    /// `EGG_CLUSTER_RS_RELOAD_CONCURRENCY`: how many replacements a reload boots at once (the
    /// surge: extra workers beyond N); unset, the runtime uses the CPUs the master may use.
    pub reload_concurrency: Option<usize>,
    /// `EGG_CLUSTER_RS_MAX_WORKERS`: the most app workers scaling may ask for; unset, four
    /// per CPU (or `workers`, if more).
    pub max_workers: Option<usize>,
    /// `EGG_MASTER_LOGGER_LEVEL`: the master logger's level (egg-logger's INFO when unset).
    pub logger_level: Option<String>,
    /// `EGG_LOG`: overrides `logger_level` when non-empty, as in egg-logger.
    pub egg_log: Option<String>,
    /// `HOST`: the address printed in the "started on" line.
    pub host: Option<String>,
    /// `NODE_ENV`: decides production mode when no egg env is set.
    pub node_env: Option<String>,
    /// `EGG_APP_CLOSE_TIMEOUT`, else `EGG_MASTER_CLOSE_TIMEOUT`, else 5000 ms.
    pub app_close_timeout: CloseTimeout,
    /// `EGG_AGENT_CLOSE_TIMEOUT`, else `EGG_MASTER_CLOSE_TIMEOUT`, else 5000 ms.
    pub agent_close_timeout: CloseTimeout,
    /// `EGG_AGENT_DEBUG_PORT` (5800): the agent's `--inspect-port` when debugging.
    pub agent_debug_port: u16,
    /// `EGG_CLUSTER_RS_REFORK_LIMIT` (60): cfork's `limit`, reforks allowed per duration.
    pub refork_limit: usize,
    /// `EGG_CLUSTER_RS_REFORK_DURATION` (60000): cfork's `duration` in ms, the limit's window.
    pub refork_duration_ms: u64,
    /// `EGG_CLUSTER_RS_HEALTH_INTERVAL` (10000 ms): how often the children are health-checked.
    pub health_interval: Duration,
    /// `EGG_CLUSTER_RS_SHUTDOWN_DELAY` (ms): `shutdownDelay` when the option is not given.
    pub shutdown_delay: Option<Duration>,
    /// `EGG_CLUSTER_RS_FAULT_INJECTION=1`: lets the test suite make the master panic on purpose.
    pub fault_injection: bool,
    /// `EGG_CLUSTER_RS_WORKER_TIMEOUT` (ms, 0 turns it off): the default of `workerTimeout`.
    pub worker_timeout_ms: Option<u64>,
    /// `EGG_CLUSTER_RS_START_TIMEOUT` (ms, 0 turns it off; default 660000): an app worker that
    /// does not serve this long after its spawn is replaced.
    pub start_timeout: Option<Duration>,
    /// `EGG_CLUSTER_RS_UPGRADE_TIMEOUT` (ms; default 300000, egg-scripts start's own timeout):
    /// how long the new master of an upgrade may take to be ready before it is rolled back.
    pub upgrade_timeout: Duration,
    /// systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS` (those meant for this process).
    pub systemd: super::systemd::SystemdEnv,
}

/// How long a child may take to exit after SIGTERM before it is SIGKILLed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseTimeout {
    /// The variable's value as given: egg-cluster prints it, not the parsed number.
    pub shown: String,
    /// What is applied: `shown` in ms, or 5000 ms when it is not a number.
    pub limit: Duration,
}

impl CloseTimeout {
    fn new(shown: String) -> Self {
        let limit = parse_timeout(&shown, 5000);
        CloseTimeout { shown, limit }
    }
}

impl Settings {
    pub(crate) fn from_env(env: &HashMap<String, String>) -> Result<Self, OptionsError> {
        let var = |name: &str| env.get(name).cloned();
        let legacy_timeout = var("EGG_MASTER_CLOSE_TIMEOUT").unwrap_or_else(|| "5000".into());
        Ok(Settings {
            logger_level: var("EGG_MASTER_LOGGER_LEVEL"),
            egg_log: var("EGG_LOG"),
            host: var("HOST"),
            node_env: var("NODE_ENV"),
            app_close_timeout: CloseTimeout::new(
                var("EGG_APP_CLOSE_TIMEOUT").unwrap_or_else(|| legacy_timeout.clone()),
            ),
            agent_close_timeout: CloseTimeout::new(
                var("EGG_AGENT_CLOSE_TIMEOUT").unwrap_or(legacy_timeout),
            ),
            agent_debug_port: strict(
                env,
                "EGG_AGENT_DEBUG_PORT",
                "an integer between 1 and 65535",
                |&port: &u16| port > 0,
            )?
            .unwrap_or(5800),
            refork_limit: strict(
                env,
                "EGG_CLUSTER_RS_REFORK_LIMIT",
                "a non-negative integer",
                |_: &usize| true,
            )?
            .unwrap_or(60),
            refork_duration_ms: strict(
                env,
                "EGG_CLUSTER_RS_REFORK_DURATION",
                "a non-negative integer (ms)",
                |_: &u64| true,
            )?
            .unwrap_or(60_000),
            health_interval: Duration::from_millis(
                strict(
                    env,
                    "EGG_CLUSTER_RS_HEALTH_INTERVAL",
                    // tokio's interval panics on a zero period.
                    "a positive integer (ms)",
                    |&ms: &u64| ms > 0,
                )?
                .unwrap_or(10_000),
            ),
            reload_timeout: Duration::from_millis(
                strict(
                    env,
                    "EGG_CLUSTER_RS_RELOAD_TIMEOUT",
                    "a positive integer (ms)",
                    |&ms: &u64| ms > 0,
                )?
                .unwrap_or(60_000),
            ),
            reload_concurrency: strict(
                env,
                "EGG_CLUSTER_RS_RELOAD_CONCURRENCY",
                "a positive integer",
                |&n: &usize| n > 0,
            )?,
            max_workers: strict(
                env,
                "EGG_CLUSTER_RS_MAX_WORKERS",
                "a positive integer",
                |&n: &usize| n > 0,
            )?,
            shutdown_delay: strict(
                env,
                "EGG_CLUSTER_RS_SHUTDOWN_DELAY",
                "a non-negative integer (ms)",
                |_: &u64| true,
            )?
            .map(Duration::from_millis),
            fault_injection: env
                .get("EGG_CLUSTER_RS_FAULT_INJECTION")
                .is_some_and(|v| v == "1"),
            worker_timeout_ms: strict(
                env,
                "EGG_CLUSTER_RS_WORKER_TIMEOUT",
                "a non-negative integer (ms), 0 turns it off",
                |_: &u64| true,
            )?,
            // egg's own `workerStartTimeout` (10 min) makes a worker whose app is not ready exit
            // with its own message; ours comes a minute later and also covers a worker that is
            // ready but never listens, or is stuck before egg's timer could fire.
            start_timeout: Some(
                strict(
                    env,
                    "EGG_CLUSTER_RS_START_TIMEOUT",
                    "a non-negative integer (ms), 0 turns it off",
                    |_: &u64| true,
                )?
                .unwrap_or(660_000),
            )
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
            upgrade_timeout: Duration::from_millis(
                strict(
                    env,
                    "EGG_CLUSTER_RS_UPGRADE_TIMEOUT",
                    "a positive integer (ms)",
                    |&ms: &u64| ms > 0,
                )?
                .unwrap_or(300_000),
            ),
            systemd: super::systemd::SystemdEnv::from_env(env, std::process::id()).map_err(
                |(name, expected)| OptionsError::InvalidEnv {
                    name,
                    expected,
                    got: json_repr(&Value::from(env.get(name).map_or("", String::as_str))),
                },
            )?,
        })
    }
}

/// The variable `name` as a `T` accepted by `valid`, or `None` when it is not set. Any other
/// value, the empty string included, is an error: the user set it to mean something.
fn strict<T: FromStr>(
    env: &HashMap<String, String>,
    name: &'static str,
    expected: &'static str,
    valid: impl Fn(&T) -> bool,
) -> Result<Option<T>, OptionsError> {
    let Some(value) = env.get(name) else {
        return Ok(None);
    };
    match value.parse::<T>() {
        Ok(parsed) if valid(&parsed) => Ok(Some(parsed)),
        _ => Err(OptionsError::InvalidEnv {
            name,
            expected,
            got: json_repr(&Value::from(value.as_str())),
        }),
    }
}

/// Parses a close timeout env value like JS `setTimeout` would use it (ms), default on garbage.
fn parse_timeout(raw: &str, default_ms: u64) -> Duration {
    let ms = raw
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(default_ms, |v| v as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(&env).map_err(|e| e.to_string())
    }

    fn ok(vars: &[(&str, &str)]) -> Settings {
        settings(vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
    }

    fn timeout(shown: &str, ms: u64) -> CloseTimeout {
        CloseTimeout {
            shown: shown.into(),
            limit: Duration::from_millis(ms),
        }
    }

    #[test]
    fn timeouts_parse_like_numbers() {
        assert_eq!(parse_timeout("1000", 5000), Duration::from_millis(1000));
        assert_eq!(parse_timeout(" 250 ", 5000), Duration::from_millis(250));
        assert_eq!(parse_timeout("abc", 5000), Duration::from_millis(5000));
        assert_eq!(parse_timeout("-1", 5000), Duration::from_millis(5000));
    }

    #[test]
    fn defaults() {
        assert_eq!(
            ok(&[]),
            Settings {
                reload_timeout: Duration::from_secs(60),
                reload_concurrency: None,
                max_workers: None,
                worker_timeout_ms: None,
                start_timeout: Some(Duration::from_secs(660)),
                upgrade_timeout: Duration::from_secs(300),
                logger_level: None,
                egg_log: None,
                host: None,
                node_env: None,
                app_close_timeout: timeout("5000", 5000),
                agent_close_timeout: timeout("5000", 5000),
                agent_debug_port: 5800,
                refork_limit: 60,
                refork_duration_ms: 60_000,
                health_interval: Duration::from_millis(10_000),
                shutdown_delay: None,
                fault_injection: false,
                systemd: Default::default(),
            }
        );
    }

    #[test]
    fn strings_are_taken_as_given() {
        let s = ok(&[
            ("EGG_MASTER_LOGGER_LEVEL", "warn"),
            ("EGG_LOG", "ERROR"),
            ("HOST", "example.test"),
            ("NODE_ENV", "production"),
        ]);
        assert_eq!(s.logger_level.as_deref(), Some("warn"));
        assert_eq!(s.egg_log.as_deref(), Some("ERROR"));
        assert_eq!(s.host.as_deref(), Some("example.test"));
        assert_eq!(s.node_env.as_deref(), Some("production"));
        // Empty is still "set": egg-logger and egg-cluster decide what an empty value means.
        assert_eq!(ok(&[("EGG_LOG", "")]).egg_log.as_deref(), Some(""));
    }

    #[test]
    fn close_timeouts_fall_back_to_the_master_one_and_stay_lenient() {
        let s = ok(&[("EGG_APP_CLOSE_TIMEOUT", "1000")]);
        assert_eq!(s.app_close_timeout, timeout("1000", 1000));
        assert_eq!(s.agent_close_timeout, timeout("5000", 5000));

        let s = ok(&[("EGG_AGENT_CLOSE_TIMEOUT", "2000")]);
        assert_eq!(s.app_close_timeout, timeout("5000", 5000));
        assert_eq!(s.agent_close_timeout, timeout("2000", 2000));

        let s = ok(&[
            ("EGG_MASTER_CLOSE_TIMEOUT", "3000"),
            ("EGG_AGENT_CLOSE_TIMEOUT", "4000"),
        ]);
        assert_eq!(s.app_close_timeout, timeout("3000", 3000));
        assert_eq!(s.agent_close_timeout, timeout("4000", 4000));

        // Not a number: logged as given, applied as the default.
        let s = ok(&[("EGG_MASTER_CLOSE_TIMEOUT", "soon")]);
        assert_eq!(s.app_close_timeout, timeout("soon", 5000));
        assert_eq!(s.agent_close_timeout, timeout("soon", 5000));
        let s = ok(&[("EGG_APP_CLOSE_TIMEOUT", "")]);
        assert_eq!(s.app_close_timeout, timeout("", 5000));
    }

    #[test]
    fn strict_numbers_are_read() {
        let s = ok(&[
            ("EGG_AGENT_DEBUG_PORT", "9300"),
            ("EGG_CLUSTER_RS_REFORK_LIMIT", "3"),
            ("EGG_CLUSTER_RS_REFORK_DURATION", "1000"),
            ("EGG_CLUSTER_RS_HEALTH_INTERVAL", "250"),
        ]);
        assert_eq!(s.agent_debug_port, 9300);
        assert_eq!(s.refork_limit, 3);
        assert_eq!(s.refork_duration_ms, 1000);
        assert_eq!(s.health_interval, Duration::from_millis(250));
        // Zero reforks is a limit, not a mistake.
        assert_eq!(ok(&[("EGG_CLUSTER_RS_REFORK_LIMIT", "0")]).refork_limit, 0);
        assert_eq!(
            ok(&[("EGG_AGENT_DEBUG_PORT", "65535")]).agent_debug_port,
            65535
        );
    }

    #[test]
    fn reload_concurrency_is_a_positive_integer() {
        assert_eq!(
            ok(&[("EGG_CLUSTER_RS_RELOAD_CONCURRENCY", "3")]).reload_concurrency,
            Some(3)
        );
        for bad in ["0", "-1", "two", "1.5"] {
            let e = settings(&[("EGG_CLUSTER_RS_RELOAD_CONCURRENCY", bad)]).expect_err(bad);
            assert!(e.contains("EGG_CLUSTER_RS_RELOAD_CONCURRENCY"), "{e}");
        }
    }

    #[test]
    fn hang_and_start_timeouts() {
        let s = ok(&[
            ("EGG_CLUSTER_RS_WORKER_TIMEOUT", "3000"),
            ("EGG_CLUSTER_RS_START_TIMEOUT", "0"),
        ]);
        assert_eq!(s.worker_timeout_ms, Some(3000));
        assert_eq!(s.start_timeout, None);
        assert_eq!(
            ok(&[("EGG_CLUSTER_RS_UPGRADE_TIMEOUT", "20000")]).upgrade_timeout,
            Duration::from_secs(20)
        );
        assert_eq!(
            ok(&[("EGG_CLUSTER_RS_START_TIMEOUT", "5000")]).start_timeout,
            Some(Duration::from_millis(5000))
        );
        for (name, v) in [
            ("EGG_CLUSTER_RS_WORKER_TIMEOUT", "60s"),
            ("EGG_CLUSTER_RS_WORKER_TIMEOUT", "-1"),
            ("EGG_CLUSTER_RS_START_TIMEOUT", ""),
            ("EGG_CLUSTER_RS_UPGRADE_TIMEOUT", "0"),
        ] {
            let e = settings(&[(name, v)]).unwrap_err();
            assert!(e.starts_with(name), "{e}");
        }
    }

    #[test]
    fn bad_strict_numbers_fail_naming_the_variable() {
        let cases = [
            (
                "EGG_AGENT_DEBUG_PORT",
                "abc",
                "an integer between 1 and 65535",
            ),
            (
                "EGG_AGENT_DEBUG_PORT",
                "0",
                "an integer between 1 and 65535",
            ),
            (
                "EGG_AGENT_DEBUG_PORT",
                "65536",
                "an integer between 1 and 65535",
            ),
            (
                "EGG_CLUSTER_RS_REFORK_LIMIT",
                "-1",
                "a non-negative integer",
            ),
            ("EGG_CLUSTER_RS_REFORK_LIMIT", "", "a non-negative integer"),
            (
                "EGG_CLUSTER_RS_REFORK_DURATION",
                "1e3",
                "a non-negative integer (ms)",
            ),
            (
                "EGG_CLUSTER_RS_SHUTDOWN_DELAY",
                "5s",
                "a non-negative integer (ms)",
            ),
            (
                "EGG_CLUSTER_RS_SHUTDOWN_DELAY",
                "-1",
                "a non-negative integer (ms)",
            ),
            (
                "EGG_CLUSTER_RS_HEALTH_INTERVAL",
                "abc",
                "a positive integer (ms)",
            ),
            (
                "EGG_CLUSTER_RS_HEALTH_INTERVAL",
                "0",
                "a positive integer (ms)",
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                settings(&[(name, value)]),
                Err(format!("{name} should be {expected}, got {value:?}")),
                "{name}={value:?}"
            );
        }
    }

    #[test]
    fn fault_injection_only_on_one() {
        let on = |v: &str| ok(&[("EGG_CLUSTER_RS_FAULT_INJECTION", v)]).fault_injection;
        assert!(on("1"));
        assert!(!on("0"));
        assert!(!on("true"));
        assert!(!on(""));
    }
}
