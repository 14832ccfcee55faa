//! `metrics: { port, host }`: where the master serves `/metrics`, `/healthz` and `/readyz`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use super::js::json_repr;
use super::OptionsError;

fn invalid(name: &str, expected: &'static str, got: &Value) -> OptionsError {
    OptionsError::Invalid {
        name: name.into(),
        expected,
        got: json_repr(got),
    }
}

/// `None` when unset (the endpoint is opt-in). The host defaults to loopback: the endpoint
/// tells anyone who can reach it about the cluster, so exposing it must be asked for.
pub(crate) fn parse_metrics(v: Option<&Value>) -> Result<Option<SocketAddr>, OptionsError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(invalid(
                "options.metrics",
                "an object like { port: 9100, host: '127.0.0.1' }",
                other,
            ))
        }
    };
    let port = match obj.get("port") {
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| invalid("options.metrics.port", "an integer between 0 and 65535", p))?,
        None => {
            return Err(invalid(
                "options.metrics.port",
                "an integer between 0 and 65535",
                &Value::Null,
            ))
        }
    };
    let host = match obj.get("host") {
        None | Some(Value::Null) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => h
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| invalid("options.metrics.host", "an IP address", h))?,
    };
    Ok(Some(SocketAddr::new(host, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_option() {
        assert_eq!(parse_metrics(None).unwrap(), None);
        assert_eq!(
            parse_metrics(Some(&json!({"port": 9100}))).unwrap(),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            parse_metrics(Some(&json!({"port": 0, "host": "::1"}))).unwrap(),
            Some("[::1]:0".parse().unwrap())
        );
        let err = |v: Value| parse_metrics(Some(&v)).unwrap_err().to_string();
        assert_eq!(
            err(json!(9100)),
            "options.metrics should be an object like { port: 9100, host: '127.0.0.1' }, got 9100"
        );
        assert!(err(json!({})).starts_with("options.metrics.port should be"));
        assert!(err(json!({"port": 70000})).starts_with("options.metrics.port should be"));
        assert!(err(json!({"port": "9100"})).starts_with("options.metrics.port should be"));
        assert!(err(json!({"port": 1, "host": "localhost"}))
            .starts_with("options.metrics.host should be an IP address"));
    }
}
