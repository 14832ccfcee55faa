//! Node's `cluster` wire protocol, primary side: parsing what workers send and building replies.
//!
//! Every message is `{"cmd":"NODE_CLUSTER", ..., "seq":N}`; replies carry `ack` = the request's
//! `seq` (and `ack` appears on nothing else). See `docs/ipc-protocol.md` §4. The shared-handle mode
//! (`SCHED_NONE`) is what we answer: the master binds, workers accept.

use serde::Deserialize;
use serde_json::Value;

/// The `act` of a worker's `NODE_CLUSTER` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Act {
    Online,
    QueryServer,
    Listening,
    Close,
    ExitedAfterDisconnect,
    /// Anything else (Node sends nothing else to a primary in shared-handle mode).
    #[default]
    #[serde(other)]
    Unknown,
}

/// A worker's message, with the fields the primary uses.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMessage {
    #[serde(default)]
    pub act: Act,
    pub seq: Option<i64>,
    pub key: Option<String>,
    pub index: Option<Value>,
    #[serde(default)]
    pub data: Value,
    pub address: Option<String>,
    pub port: Option<Value>,
    pub address_type: Option<Value>,
    pub fd: Option<Value>,
    pub flags: Option<i64>,
    pub backlog: Option<i64>,
    pub readable_all: Option<bool>,
    pub writable_all: Option<bool>,
}

pub fn parse(line: &[u8]) -> Result<ClusterMessage, serde_json::Error> {
    serde_json::from_slice(line)
}

/// What a `queryServer` asks to be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRequest {
    /// TCP; `address` `None` means "any" (dual-stack `::`, falling back to `0.0.0.0`).
    Tcp {
        address: Option<std::net::IpAddr>,
        port: u16,
        ipv6_only: bool,
    },
    Unix {
        path: String,
        readable_all: bool,
        writable_all: bool,
    },
}

/// libuv error numbers are negative errnos.
pub const UV_EINVAL: i32 = -libc::EINVAL;
pub const UV_ENOTSUP: i32 = -libc::ENOTSUP;
pub const UV_EBADF: i32 = -libc::EBADF;

impl ClusterMessage {
    /// The handle key, in Node 20's format `address:port:addressType:fd:index` with JS string
    /// conversion (`null`, `undefined`), so several workers' identical listens share a key.
    pub fn handle_key(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.address.as_deref().unwrap_or("null"),
            js_string(self.port.as_ref()),
            js_string(self.address_type.as_ref()),
            js_string(self.fd.as_ref()),
            js_string(self.index.as_ref()),
        )
    }

    /// The port in a `listening` message or query, if numeric.
    pub fn port_number(&self) -> Option<i64> {
        self.port.as_ref().and_then(Value::as_i64)
    }

    /// What to bind for a `queryServer`, or the libuv errno to reply with.
    pub fn bind_request(&self) -> Result<BindRequest, i32> {
        if self
            .fd
            .as_ref()
            .and_then(Value::as_i64)
            .is_some_and(|fd| fd >= 0)
        {
            // `listen({fd})`: the fd number is the worker's, not ours.
            return Err(UV_EBADF);
        }
        match self.address_type.as_ref() {
            Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(BindRequest::Unix {
                path: self.address.clone().ok_or(UV_EINVAL)?,
                readable_all: self.readable_all.unwrap_or(false),
                writable_all: self.writable_all.unwrap_or(false),
            }),
            Some(Value::Number(n)) if matches!(n.as_i64(), Some(4) | Some(6)) => {
                let port = self.port_number().ok_or(UV_EINVAL)?;
                let port = u16::try_from(port).map_err(|_| UV_EINVAL)?;
                let address = match &self.address {
                    None => None,
                    Some(a) => Some(a.parse().map_err(|_| UV_EINVAL)?),
                };
                Ok(BindRequest::Tcp {
                    address,
                    port,
                    ipv6_only: self.flags.unwrap_or(0) & 1 == 1,
                })
            }
            // UDP ("udp4"/"udp6") in workers is not part of egg's model.
            _ => Err(UV_ENOTSUP),
        }
    }

    /// `{addressType, address, port, fd}` as Node's `cluster` `'listening'` event builds it
    /// (`undefined` members dropped, as `%j` does).
    pub fn listening_address(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "addressType".into(),
            self.address_type.clone().unwrap_or(Value::Null),
        );
        m.insert(
            "address".into(),
            self.address
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        m.insert("port".into(), self.port.clone().unwrap_or(Value::Null));
        if let Some(fd) = &self.fd {
            m.insert("fd".into(), fd.clone());
        }
        Value::Object(m)
    }
}

/// The inner `NODE_CLUSTER` reply to a `queryServer`, shared mode: sent inside a `NODE_HANDLE`
/// envelope with the bound fd on success (`errno` 0), plain without fd on failure.
pub fn query_reply(errno: i32, key: &str, ack: i64, data: &Value, seq: u64) -> Vec<u8> {
    let mut v = serde_json::Map::new();
    v.insert("cmd".into(), "NODE_CLUSTER".into());
    v.insert("errno".into(), errno.into());
    v.insert("key".into(), key.into());
    v.insert("ack".into(), ack.into());
    v.insert("data".into(), data.clone());
    v.insert("seq".into(), seq.into());
    // A Map of plain values always serializes.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The reply to `exitedAfterDisconnect`; without it the worker never disconnects.
pub fn ack_reply(ack: i64, seq: u64) -> Vec<u8> {
    format!("{{\"cmd\":\"NODE_CLUSTER\",\"ack\":{ack},\"seq\":{seq}}}").into_bytes()
}

fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_node_20_for_plain_listen() {
        let m = parse(br#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":7001,"addressType":4,"backlog":0,"seq":1}"#).unwrap();
        assert_eq!(m.handle_key(), "null:7001:4:undefined:0");
        assert_eq!(
            m.bind_request(),
            Ok(BindRequest::Tcp {
                address: None,
                port: 7001,
                ipv6_only: false
            })
        );
    }

    #[test]
    fn unix_path_and_host_queries() {
        let m = parse(br#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"/tmp/s.sock","port":-1,"addressType":-1,"seq":1}"#).unwrap();
        assert_eq!(m.handle_key(), "/tmp/s.sock:-1:-1:undefined:0");
        assert!(matches!(m.bind_request(), Ok(BindRequest::Unix { .. })));
        let m = parse(br#"{"act":"queryServer","index":1,"address":"::1","port":80,"addressType":6,"flags":1,"seq":2}"#).unwrap();
        assert_eq!(
            m.bind_request(),
            Ok(BindRequest::Tcp {
                address: Some("::1".parse().unwrap()),
                port: 80,
                ipv6_only: true
            })
        );
    }

    #[test]
    fn unsupported_queries_get_negative_errnos() {
        let m = parse(br#"{"act":"queryServer","index":0,"address":null,"port":null,"addressType":null,"fd":7,"seq":1}"#).unwrap();
        assert_eq!(m.bind_request(), Err(UV_EBADF));
        let m = parse(br#"{"act":"queryServer","index":0,"address":"0.0.0.0","port":1,"addressType":"udp4","fd":-1,"seq":1}"#).unwrap();
        assert_eq!(m.bind_request(), Err(UV_ENOTSUP));
        let m = parse(br#"{"act":"queryServer","index":0,"address":null,"port":70000,"addressType":4,"seq":1}"#).unwrap();
        assert_eq!(m.bind_request(), Err(UV_EINVAL));
    }

    #[test]
    fn replies_are_node_shaped() {
        let data = serde_json::json!({"ticketKeys": "ab"});
        assert_eq!(
            String::from_utf8(query_reply(0, "k", 1, &data, 0)).unwrap(),
            r#"{"cmd":"NODE_CLUSTER","errno":0,"key":"k","ack":1,"data":{"ticketKeys":"ab"},"seq":0}"#
        );
        assert_eq!(
            String::from_utf8(ack_reply(3, 4)).unwrap(),
            r#"{"cmd":"NODE_CLUSTER","ack":3,"seq":4}"#
        );
    }

    #[test]
    fn listening_address_drops_undefined_fd() {
        let m = parse(br#"{"act":"listening","index":0,"data":null,"address":null,"port":7001,"addressType":4,"backlog":0,"seq":2}"#).unwrap();
        assert_eq!(
            m.listening_address().to_string(),
            r#"{"addressType":4,"address":null,"port":7001}"#
        );
    }
}
