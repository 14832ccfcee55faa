//! Node's child-process IPC channel, spoken from Rust.
//!
//! See `docs/ipc-protocol.md`: one `AF_UNIX` stream socket per child, one compact
//! JSON text per line, file descriptors as `SCM_RIGHTS` next to a `NODE_HANDLE` line.
//!
//! - [`frame`]: splitting the byte stream into lines (pure).
//! - [`json`]: reading and editing the top-level fields of a line without a full parse (pure).
//! - [`channel`]: the socket itself: `recvmsg`/`sendmsg`, fd FIFO, the one-handle-in-flight rule.

pub mod channel;
pub mod frame;
pub mod json;

/// A message is internal to Node iff its `cmd` is a string longer than 5 that starts with `NODE_`.
pub fn is_internal_cmd(cmd: &str) -> bool {
    cmd.len() > 5 && cmd.starts_with("NODE_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_rule_matches_node() {
        assert!(is_internal_cmd("NODE_HANDLE"));
        assert!(is_internal_cmd("NODE_X"));
        assert!(!is_internal_cmd("NODE_"));
        assert!(!is_internal_cmd("node_x"));
        assert!(!is_internal_cmd("XNODE_HANDLE"));
    }
}
