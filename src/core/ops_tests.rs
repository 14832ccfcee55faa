//! The operator's view of the core: status snapshots, restarts, lifecycle notices.

use super::tests::{app_pid, cfg, listening, released, started, to_master, AGENT};
use super::*;

fn notices(actions: &[Action]) -> Vec<Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(n) => Some(*n),
            _ => None,
        })
        .collect()
}

fn status(core: &mut Core) -> CoreStatus {
    let a = core.handle(Event::StatusRequest(StatusTo::Waiter(7)), 1000);
    match a.as_slice() {
        [Action::Status(StatusTo::Waiter(7), s)] => (**s).clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ready_is_notified_once_after_the_ready_action() {
    let (_, last) = started(2);
    let n = notices(&last);
    assert_eq!(
        n,
        [Notice {
            phase: Some(OpsPhase::Ready),
            serving: 2,
            workers: 2
        }]
    );
    let ready = last.iter().position(|a| matches!(a, Action::Ready(_)));
    let notify = last.iter().position(|a| matches!(a, Action::Notify(_)));
    assert!(ready < notify, "{last:?}");
    // Nothing is notified while starting.
    let mut core = Core::new(cfg(1), 0);
    assert!(notices(&core.handle(Event::Start, 0)).is_empty());
}

#[test]
fn status_before_and_after_start() {
    let mut core = Core::new(cfg(2), 0);
    let s = status(&mut core);
    assert_eq!(s.master.phase, OpsPhase::Starting);
    assert!(!s.master.ready && !s.master.healthy);
    assert!(s.children.is_empty());

    let (mut core, _) = started(2);
    let s = status(&mut core);
    assert_eq!(s.master.phase, OpsPhase::Ready);
    assert!(s.master.ready && s.master.healthy);
    assert_eq!(
        (
            s.master.workers,
            s.master.serving,
            s.master.reforks,
            s.master.backoff_ms
        ),
        (2, 2, 0, 0)
    );
    let roles: Vec<(&str, u32, u32, &str)> = s
        .children
        .iter()
        .map(|c| (c.role, c.id, c.pid, c.state))
        .collect();
    assert_eq!(
        roles,
        [
            ("agent", 1, AGENT, "serving"),
            ("app", 1, app_pid(0), "serving"),
            ("app", 2, app_pid(1), "serving"),
        ]
    );
    assert!(s
        .children
        .iter()
        .all(|c| c.restarts == 0 && c.last_exit.is_none()));
    assert_eq!(s.children[1].serving_since, Some(100));
}

#[test]
fn a_killed_worker_is_a_restart_of_its_slot_and_a_refork() {
    let (mut core, _) = started(2);
    // cfork reforks at the disconnect.
    let a = core.handle(
        Event::ChannelClosed {
            pid: app_pid(0),
            reason: None,
        },
        200,
    );
    let spawned = a.iter().find_map(|a| match a {
        Action::SpawnApps {
            batch: Batch::Refork,
            apps,
        } => Some(apps.clone()),
        _ => None,
    });
    assert_eq!(spawned, Some(vec![(3, 0)]));
    // One serving worker left: a STATUS-only notice.
    assert_eq!(
        notices(&a),
        [Notice {
            phase: None,
            serving: 1,
            workers: 2
        }]
    );
    core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        201,
    );
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 3,
                slot: 0,
                pid: Ok(30),
            }],
        },
        202,
    );
    let s = status(&mut core);
    assert_eq!(s.master.reforks, 1);
    let new = s.children.iter().find(|c| c.pid == 30).unwrap();
    assert_eq!((new.slot, new.restarts, new.state), (Some(0), 1, "forked"));
    assert_eq!(
        new.last_exit,
        Some(ops::ExitRecord {
            pid: app_pid(0),
            code: None,
            signal: Some("SIGKILL"),
            at: 201
        })
    );
    let other = s.children.iter().find(|c| c.pid == app_pid(1)).unwrap();
    assert_eq!(other.restarts, 0);
    core.handle(listening(30, 7001), 300);
    assert_eq!(status(&mut core).master.serving, 2);
}

#[test]
fn reload_is_notified_as_reloading_then_ready() {
    let (mut core, _) = started(1);
    let a = core.handle(Event::Reload(ReloadReason::Signal), 1000);
    assert_eq!(
        notices(&a)[0].phase,
        Some(OpsPhase::Reloading),
        "{:?}",
        notices(&a)
    );
    assert_eq!(status(&mut core).master.phase, OpsPhase::Reloading);
    assert!(status(&mut core).master.ready);
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Replace,
            apps: vec![Spawned {
                id: 2,
                slot: 0,
                pid: Ok(40),
            }],
        },
        1001,
    );
    let a = core.handle(listening(40, 7001), 1100);
    // The old worker retires at once; the reload ends when it exits.
    assert!(notices(&a).iter().all(|n| n.phase.is_none()));
    let a = core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: Some(0),
            signal: None,
            oom: None,
        },
        1200,
    );
    assert_eq!(
        notices(&a).last().and_then(|n| n.phase),
        Some(OpsPhase::Ready),
        "{a:?}"
    );
    // A retirement is no restart.
    let s = status(&mut core);
    assert!(s.children.iter().all(|c| c.restarts == 0), "{s:?}");
}

#[test]
fn close_is_notified_once_and_is_not_ready() {
    let (mut core, _) = started(2);
    let a = core.handle(
        Event::Signal {
            name: "SIGTERM".into(),
            heap_limit: 0.0,
            heap_used: 0.0,
            mem_total: 0,
            mem_free: 0,
        },
        300,
    );
    assert_eq!(notices(&a)[0].phase, Some(OpsPhase::Closing));
    let s = status(&mut core);
    assert_eq!(s.master.phase, OpsPhase::Closing);
    assert!(!s.master.ready);
    let a = core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: Some(0),
            signal: None,
            oom: None,
        },
        301,
    );
    assert!(notices(&a).is_empty());
    // Exits during the close are no restarts.
    assert!(status(&mut core).children.iter().all(|c| c.restarts == 0));
}

#[test]
fn cluster_status_message_is_answered_to_its_sender() {
    let (mut core, _) = started(1);
    let a = core.handle(
        to_master(Role::App, app_pid(0), MasterAction::ClusterStatus, None),
        500,
    );
    assert!(matches!(
        a.as_slice(),
        [Action::Status(StatusTo::Message(Target::Child(p)), _)] if *p == app_pid(0)
    ));
    let a = core.handle(
        to_master(Role::Parent, 0, MasterAction::ClusterStatus, None),
        500,
    );
    assert!(matches!(
        a.as_slice(),
        [Action::Status(StatusTo::Message(Target::Parent), _)]
    ));
}

#[test]
fn malformed_lines_are_counted() {
    let (mut core, _) = started(1);
    core.handle(
        Event::Malformed {
            pid: app_pid(0),
            reason: "x".into(),
        },
        500,
    );
    let s = status(&mut core);
    assert_eq!(s.master.malformed, 1);
    assert_eq!(s.children[1].malformed, 1);
}

#[test]
fn the_metrics_address_is_logged_at_start() {
    let mut core = Core::new(
        Config {
            metrics_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..cfg(1)
        },
        0,
    );
    let a = core.handle(Event::Start, 0);
    assert!(a.contains(&Action::Log(
        Level::Info,
        "[master] serving /metrics, /healthz and /readyz on http://127.0.0.1:9100".into()
    )));
    let mut core = Core::new(cfg(1), 0);
    let a = core.handle(Event::Start, 0);
    assert!(!format!("{a:?}").contains("/metrics"));
}

/// A tick measures the loop since the previous one, so the first after a child serves covers
/// its boot: the lag shows from the tick after that (`status` showed `LAG 8523ms` for a worker
/// just booted, 26 ms a few seconds later).
#[test]
fn the_lag_is_reported_from_a_whole_heartbeat_after_the_child_serves() {
    let mut core = released(cfg(1));
    let beat = |core: &mut Core, pid, lag_ms, now| {
        core.handle(Event::Heartbeat { pid, lag_ms }, now);
    };
    let lags = |core: &mut Core| -> Vec<Option<u64>> {
        status(core).children.iter().map(|c| c.lag_ms).collect()
    };
    // booting, then serving with a tick that still covers the boot: no lag yet
    beat(&mut core, app_pid(0), 8523, 100);
    beat(&mut core, AGENT, 4000, 100);
    assert_eq!(lags(&mut core), [None, None]);
    core.handle(listening(app_pid(0), 7001), 200);
    beat(&mut core, app_pid(0), 7000, 300);
    assert_eq!(lags(&mut core), [None, None]);
    // the agent served (agent-start) before its first tick: its second is all serving time
    beat(&mut core, AGENT, 4, 1100);
    beat(&mut core, app_pid(0), 26, 1300);
    assert_eq!(lags(&mut core), [Some(4), Some(26)]);
    beat(&mut core, app_pid(0), 312, 2300);
    assert_eq!(lags(&mut core), [Some(4), Some(312)]);
}
