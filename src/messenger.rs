//! Message routing between parent, master, agent and app workers — egg-cluster 2.x's
//! `Messenger#send`, as a pure function from one raw line to where it goes and what it becomes.
//!
//! Only the top-level `from`, `to`, `receiverPid` and `action` are read; `from`/`to` are stamped
//! by splicing bytes (see [`crate::ipc::json`]), so payloads pass through untouched.

use crate::ipc::json::{self, JsonError, Shape};
use crate::protocol::MasterAction;
use smallvec::SmallVec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Parent,
    Master,
    Agent,
    App,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Master => "master",
            Role::Agent => "agent",
            Role::App => "app",
        }
    }

    fn quoted(self) -> &'static [u8] {
        match self {
            Role::Parent => b"\"parent\"",
            Role::Master => b"\"master\"",
            Role::Agent => b"\"agent\"",
            Role::App => b"\"app\"",
        }
    }
}

/// Who can currently receive messages.
pub(crate) struct Peers<'a> {
    pub(crate) master_pid: u32,
    pub(crate) agent_pid: Option<u32>,
    /// The app workers messages reach (egg-cluster skips disconnected workers).
    pub(crate) apps: &'a [u32],
    /// egg 4: `receiverWorkerId ?? receiverPid` names the receiver (egg-cluster reads only
    /// `receiverPid`).
    pub(crate) receiver_worker_id: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    Master,
    Parent,
    Agent,
    /// The pids of the app workers to deliver to (possibly none); inline for a few workers, so
    /// routing allocates nothing.
    Apps(SmallVec<[u32; 8]>),
}

#[derive(Debug)]
pub(crate) struct Routed<'a> {
    pub(crate) dest: Destination,
    /// The message as it is delivered (`from`/`to` stamped), written on demand.
    line: Stamped<'a>,
    /// For the master: what it is and its raw `data`.
    pub(crate) to_master: Option<ToMaster>,
}

/// The delivered message: the received line with members spliced in when written (no copy
/// until then), or, for a string message, the object it became.
// Large on purpose, as `json::Shape`: short-lived on the stack, no allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Stamped<'a> {
    Splice {
        scanned: json::Scanned<'a>,
        sets: SmallVec<[(&'static str, &'static [u8]); 2]>,
    },
    Owned(Vec<u8>),
}

impl Routed<'_> {
    /// Appends the delivered message to `out`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match &self.line {
            Stamped::Splice { scanned, sets } => scanned.write_with_members(sets, out),
            Stamped::Owned(v) => out.extend_from_slice(v),
        }
    }

    /// About the delivered length (the received line plus what may be spliced in).
    pub(crate) fn len_hint(&self) -> usize {
        match &self.line {
            Stamped::Splice { scanned, .. } => scanned.line.len() + 32,
            Stamped::Owned(v) => v.len(),
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        match &self.line {
            Stamped::Splice { scanned, sets } => scanned.with_members(sets),
            Stamped::Owned(v) => v.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("a message must be an object or a string, got {0}")]
    NotAnObject(&'static str),
}

/// Routes one message line sent by `from`. `Ok(None)`: nobody is addressed (egg-cluster drops
/// such messages silently too).
pub(crate) fn route<'a>(
    from: Role,
    line: &'a [u8],
    peers: &Peers,
) -> Result<Option<Routed<'a>>, RouteError> {
    let scanned = json::scan(line)?;
    match &scanned.shape {
        Shape::Object { .. } => Ok(
            decide(from, &scanned, peers).map(|(dest, sets, to_master)| Routed {
                dest,
                line: Stamped::Splice { scanned, sets },
                to_master,
            }),
        ),
        // A bare string `s` is shorthand for `{action: s, data: s}` (egg-cluster's workers do
        // this; for the parent it would crash egg-cluster, here it gets the same treatment).
        Shape::String(range) => {
            let s = &line[range.clone()];
            let mut obj = Vec::with_capacity(s.len() * 2 + 20);
            obj.extend_from_slice(b"{\"action\":");
            obj.extend_from_slice(s);
            obj.extend_from_slice(b",\"data\":");
            obj.extend_from_slice(s);
            obj.push(b'}');
            let wrapped = json::scan(&obj)?;
            Ok(
                decide(from, &wrapped, peers).map(|(dest, sets, to_master)| Routed {
                    dest,
                    line: Stamped::Owned(wrapped.with_members(&sets)),
                    to_master,
                }),
            )
        }
        Shape::Other => Err(RouteError::NotAnObject(kind_of(line))),
    }
}

type Sets = SmallVec<[(&'static str, &'static [u8]); 2]>;
/// What a message to the master is, and its raw `data`.
type ToMaster = (MasterAction, Option<Vec<u8>>);

/// Where an object message goes and what is stamped on it; `None`: nobody is addressed.
fn decide(
    from: Role,
    scanned: &json::Scanned,
    peers: &Peers,
) -> Option<(Destination, Sets, Option<ToMaster>)> {
    let mut sets = Sets::new();
    let from_role = if from == Role::Master {
        // The master's own messages may name another sender (e.g. `from: 'agent'` for debug).
        match scanned.str("from") {
            Some(f) if !f.is_empty() => None,
            _ => Some(Role::Master),
        }
    } else {
        Some(from)
    };
    if let Some(role) = from_role {
        sets.push(("from", role.quoted()));
    }
    let sender = match from_role {
        Some(r) => std::borrow::Cow::Borrowed(r.as_str()),
        None => scanned.str("from").unwrap_or_default(),
    };

    let receiver = if peers.receiver_worker_id {
        scanned
            .raw("receiverWorkerId")
            .filter(|raw| *raw != b"null")
            .or_else(|| scanned.raw("receiverPid"))
    } else {
        scanned.raw("receiverPid")
    }
    .filter(|raw| truthy(raw));
    // egg-cluster compares `receiverPid === String(pid)`: only the canonical decimal form of a
    // pid, as a string, matches.
    let receiver_pid: Option<u32> = receiver
        .and_then(json::decode_string)
        .and_then(|s| s.parse::<u32>().ok().filter(|n| n.to_string() == s));
    let mut to = scanned
        .raw("to")
        .filter(|raw| truthy(raw))
        .map(json::decode_string);
    if receiver.is_some() {
        // A child first: in worker_threads mode children are named by thread id, and a master
        // that is pid 1 (a container's entrypoint) shares its number with the agent thread.
        let target = match receiver_pid {
            Some(pid) if peers.agent_pid == Some(pid) => Role::Agent,
            Some(pid) if pid == peers.master_pid && !peers.apps.contains(&pid) => Role::Master,
            _ => Role::App,
        };
        to = Some(Some(std::borrow::Cow::Borrowed(target.as_str())));
        sets.push(("to", target.quoted()));
    } else if to.is_none() {
        let default = match sender.as_ref() {
            "agent" => Some(Role::App),
            "app" => Some(Role::Agent),
            "parent" => Some(Role::Master),
            _ => None,
        };
        if let Some(role) = default {
            to = Some(Some(std::borrow::Cow::Borrowed(role.as_str())));
            sets.push(("to", role.quoted()));
        }
    }

    let dest = match to.flatten().as_deref() {
        Some("master") => Destination::Master,
        Some("parent") => Destination::Parent,
        Some("agent") => Destination::Agent,
        Some("app") => Destination::Apps(
            peers
                .apps
                .iter()
                // A receiverPid that is not a string matches no worker, as `!==` in egg-cluster.
                .filter(|pid| receiver.is_none() || receiver_pid == Some(**pid))
                .copied()
                .collect(),
        ),
        _ => return None,
    };
    // Only the master dispatches on `action`; nobody else pays for decoding it.
    let to_master = match dest {
        Destination::Master => Some((
            MasterAction::from_raw(scanned.raw("action")),
            scanned.raw("data").map(<[u8]>::to_vec),
        )),
        _ => None,
    };
    Some((dest, sets, to_master))
}

/// Builds a message of the master's own: `{action, to, data, from: 'master'}` in egg-cluster's
/// key order (`data` raw JSON, omitted when `None`).
pub(crate) fn master_message(action: &str, to: Role, data: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.map_or(0, <[u8]>::len));
    out.extend_from_slice(b"{\"action\":");
    out.extend_from_slice(&json::quote(action));
    out.extend_from_slice(b",\"to\":");
    out.extend_from_slice(to.quoted());
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
    }
    out.extend_from_slice(b",\"from\":\"master\"}");
    out
}

/// [`master_message`] to one worker, naming it as @eggjs/cluster does (`receiverWorkerId` and
/// `receiverPid`, the worker's pid in process mode) when `receiver` is given.
pub(crate) fn master_message_for(
    action: &str,
    to: Role,
    data: Option<&[u8]>,
    receiver: Option<u32>,
) -> Vec<u8> {
    let mut out = master_message(action, to, data);
    if let Some(pid) = receiver {
        out.pop();
        out.extend_from_slice(
            format!(",\"receiverWorkerId\":\"{pid}\",\"receiverPid\":\"{pid}\"}}").as_bytes(),
        );
    }
    out
}

/// JS truthiness of a raw JSON value.
fn truthy(raw: &[u8]) -> bool {
    !matches!(raw, b"null" | b"false" | b"\"\"" | b"0" | b"-0") && !is_zero_number(raw)
}

fn is_zero_number(raw: &[u8]) -> bool {
    raw.first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'-')
        && std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|n| n == 0.0)
}

fn kind_of(line: &[u8]) -> &'static str {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "an array",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 13 is a disconnected worker: not reachable.
    const APPS: [u32; 2] = [11, 12];

    fn peers() -> Peers<'static> {
        Peers {
            master_pid: 1,
            agent_pid: Some(10),
            apps: &APPS,
            receiver_worker_id: false,
        }
    }

    fn r(from: Role, line: &str) -> Routed<'_> {
        route(from, line.as_bytes(), &peers()).unwrap().unwrap()
    }

    fn text(r: &Routed) -> String {
        String::from_utf8(r.to_vec()).unwrap()
    }

    #[test]
    fn agent_defaults_to_all_connected_apps() {
        let out = r(Role::Agent, r#"{"action":"a","data":1}"#);
        assert_eq!(out.dest, Destination::Apps(SmallVec::from_slice(&[11, 12])));
        assert_eq!(
            text(&out),
            r#"{"action":"a","data":1,"from":"agent","to":"app"}"#
        );
    }

    #[test]
    fn app_defaults_to_agent_and_cannot_spoof_from() {
        let out = r(Role::App, r#"{"action":"a","from":"parent"}"#);
        assert_eq!(out.dest, Destination::Agent);
        assert_eq!(text(&out), r#"{"action":"a","from":"app","to":"agent"}"#);
    }

    #[test]
    fn parent_defaults_to_master() {
        let out = r(Role::Parent, r#"{"action":"x"}"#);
        assert_eq!(out.dest, Destination::Master);
        assert_eq!(out.to_master, Some((MasterAction::Other, None)));
        let out = r(
            Role::App,
            r#"{"action":"agent-start","to":"master","data":[1]}"#,
        );
        assert_eq!(
            out.to_master,
            Some((MasterAction::AgentStart, Some(b"[1]".to_vec())))
        );
    }

    #[test]
    fn string_message_becomes_action_and_data() {
        let out = r(Role::App, r#""foo""#);
        assert_eq!(out.dest, Destination::Agent);
        assert_eq!(
            text(&out),
            r#"{"action":"foo","data":"foo","from":"app","to":"agent"}"#
        );
    }

    #[test]
    fn receiver_pid_picks_master_agent_or_one_app() {
        let m = r(Role::App, r#"{"action":"a","to":"app","receiverPid":"1"}"#);
        assert_eq!(m.dest, Destination::Master);
        assert!(text(&m).contains(r#""to":"master""#));
        assert_eq!(
            r(Role::App, r#"{"receiverPid":"10","to":"app"}"#).dest,
            Destination::Agent
        );
        assert_eq!(
            r(Role::Agent, r#"{"receiverPid":"12","to":"app"}"#).dest,
            Destination::Apps(SmallVec::from_slice(&[12]))
        );
        // A disconnected worker gets nothing, a numeric pid matches nobody.
        assert_eq!(
            r(Role::Agent, r#"{"receiverPid":"13"}"#).dest,
            Destination::Apps(SmallVec::new())
        );
        assert_eq!(
            r(Role::Agent, r#"{"receiverPid":12}"#).dest,
            Destination::Apps(SmallVec::new())
        );
        // `"012" === String(12)` is false in egg-cluster too.
        assert_eq!(
            r(Role::Agent, r#"{"receiverPid":"012"}"#).dest,
            Destination::Apps(SmallVec::new())
        );
    }

    #[test]
    fn a_child_named_like_the_master_pid_gets_its_messages() {
        // worker_threads: children are named by thread id (the agent is thread 1), and a
        // master that is a container's entrypoint is pid 1 (or, in a small pid namespace, 2).
        let apps = [2u32, 3];
        let peers = |master_pid| Peers {
            master_pid,
            agent_pid: Some(1),
            apps: &apps,
            receiver_worker_id: false,
        };
        let dest = |line: &str, master_pid| {
            route(Role::App, line.as_bytes(), &peers(master_pid))
                .unwrap()
                .unwrap()
                .dest
        };
        assert_eq!(dest(r#"{"receiverPid":"1"}"#, 1), Destination::Agent);
        assert_eq!(
            dest(r#"{"receiverPid":"2"}"#, 2),
            Destination::Apps(SmallVec::from_slice(&[2]))
        );
        assert_eq!(dest(r#"{"receiverPid":"9"}"#, 9), Destination::Master);
    }

    #[test]
    fn egg4_receiver_worker_id_takes_precedence_over_receiver_pid() {
        let peers4 = Peers {
            receiver_worker_id: true,
            ..peers()
        };
        let r4 = |line: &str| {
            route(Role::Agent, line.as_bytes(), &peers4)
                .unwrap()
                .unwrap()
                .dest
        };
        assert_eq!(
            r4(r#"{"receiverWorkerId":"12","to":"app"}"#),
            Destination::Apps(SmallVec::from_slice(&[12]))
        );
        assert_eq!(r4(r#"{"receiverWorkerId":"10"}"#), Destination::Agent);
        assert_eq!(
            r4(r#"{"receiverWorkerId":"12","receiverPid":"11"}"#),
            Destination::Apps(SmallVec::from_slice(&[12]))
        );
        // `??`: null falls back to receiverPid, "" does not (and names nobody: default `to`).
        assert_eq!(
            r4(r#"{"receiverWorkerId":null,"receiverPid":"11"}"#),
            Destination::Apps(SmallVec::from_slice(&[11]))
        );
        assert_eq!(
            r4(r#"{"receiverWorkerId":"","receiverPid":"11"}"#),
            Destination::Apps(SmallVec::from_slice(&[11, 12]))
        );
        // egg 3's messenger does not know receiverWorkerId.
        assert_eq!(
            r(Role::Agent, r#"{"receiverWorkerId":"12"}"#).dest,
            Destination::Apps(SmallVec::from_slice(&[11, 12]))
        );
    }

    #[test]
    fn explicit_to_parent_and_unknown_to() {
        assert_eq!(
            r(Role::Agent, r#"{"to":"parent"}"#).dest,
            Destination::Parent
        );
        assert!(route(Role::Agent, br#"{"to":"nowhere"}"#, &peers())
            .unwrap()
            .is_none());
        assert!(route(Role::Master, br#"{"action":"x"}"#, &peers())
            .unwrap()
            .is_none());
    }

    #[test]
    fn falsy_to_is_defaulted() {
        let out = r(Role::Agent, r#"{"to":"","action":"a"}"#);
        assert_eq!(out.dest, Destination::Apps(SmallVec::from_slice(&[11, 12])));
        assert_eq!(text(&out), r#"{"to":"app","action":"a","from":"agent"}"#);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(matches!(
            route(Role::App, b"[1]", &peers()),
            Err(RouteError::NotAnObject("an array"))
        ));
        assert!(matches!(
            route(Role::App, b"null", &peers()),
            Err(RouteError::NotAnObject("null"))
        ));
        assert!(matches!(
            route(Role::App, b"{oops", &peers()),
            Err(RouteError::Json(_))
        ));
        assert!(matches!(
            route(Role::App, b"", &peers()),
            Err(RouteError::Json(JsonError::Empty))
        ));
    }

    #[test]
    fn lone_surrogate_payload_is_relayed_byte_for_byte() {
        let out = r(Role::App, r#"{"action":"s","data":"\ud800x","to":"agent"}"#);
        assert_eq!(
            text(&out),
            r#"{"action":"s","data":"\ud800x","to":"agent","from":"app"}"#
        );
    }

    #[test]
    fn master_messages_keep_egg_cluster_key_order() {
        let m = master_message("egg-pids", Role::App, Some(b"[10]"));
        assert_eq!(
            std::str::from_utf8(&m).unwrap(),
            r#"{"action":"egg-pids","to":"app","data":[10],"from":"master"}"#
        );
        let routed = route(Role::Master, &m, &peers()).unwrap().unwrap();
        assert_eq!(routed.to_vec(), m);
        assert_eq!(
            routed.dest,
            Destination::Apps(SmallVec::from_slice(&[11, 12]))
        );
    }
}
