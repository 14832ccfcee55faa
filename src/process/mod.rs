//! Process management for the master's Node children: [`spawn`] starts a child with the IPC
//! channel on fd 3 (everything else CLOEXEC) and reaps it through a pidfd, never touching the
//! SIGCHLD handler or `waitpid(-1)` that libuv owns inside Node; [`terminate`] stops a child and
//! its whole process tree with SIGTERM, then SIGKILL after a timeout; [`tree`] finds a process's
//! descendants in /proc; [`orphans`] finds what a dead child left behind; [`oom`] tells the OOM
//! killer's SIGKILL from others; [`watchdog`] kills the children that outlive a dead master.

pub mod oom;
pub mod orphans;
pub mod spawn;
pub mod terminate;
pub mod tree;
pub mod watchdog;

#[cfg(test)]
mod testutil;
