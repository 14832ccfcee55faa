//! The master upgrade: refusals, one at a time, hand-over, rollback.

use super::*;

fn request(waiter: u64) -> Event {
    Event::Upgrade(UpgradeRequest {
        waiter,
        ipc_parent: false,
    })
}

fn outcome(actions: &[Action]) -> Option<(Vec<u64>, Result<u32, String>)> {
    actions.iter().find_map(|a| match a {
        Action::UpgradeOutcome { waiters, result } => Some((waiters.clone(), result.clone())),
        _ => None,
    })
}

fn refused(core: &mut Core, req: UpgradeRequest) -> String {
    let a = core.handle(Event::Upgrade(req), 200);
    assert!(!a.iter().any(|a| matches!(a, Action::SpawnMaster { .. })));
    match outcome(&a) {
        Some((w, Err(reason))) if w == vec![req.waiter] => {
            assert!(has_log(&a, &format!("[master] upgrade refused: {reason}")));
            reason
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// Started, upgrade asked by waiter 1, new master pid 500 running.
fn upgrading() -> Core {
    let (mut core, _) = started(2);
    let a = core.handle(request(1), 200);
    assert!(a.contains(&Action::SpawnMaster { seq: 1, workers: 2 }));
    assert!(a.contains(&Action::After(
        Duration::from_secs(300),
        Timer::UpgradeTimeout(1)
    )));
    let a = core.handle(
        Event::UpgradeSpawned {
            seq: 1,
            result: Ok(500),
        },
        210,
    );
    assert!(has_log(&a, "new master pid 500 started"));
    core
}

#[test]
fn an_upgrade_is_refused_where_a_new_master_cannot_take_over() {
    let req = UpgradeRequest {
        waiter: 7,
        ipc_parent: false,
    };
    let (mut core, _) = started_with(Config {
        is_pid1: true,
        ..cfg(2)
    });
    assert!(refused(&mut core, req).contains("PID 1"));
    let (mut core, _) = started(2);
    let with_parent = UpgradeRequest {
        ipc_parent: true,
        ..req
    };
    assert!(refused(&mut core, with_parent).contains("IPC parent"));
    // Before ready, and while closing.
    let mut core = Core::new(cfg(2), 0);
    core.handle(Event::Start, 0);
    assert!(refused(&mut core, req).contains("not ready yet"));
    let (mut core, _) = started(2);
    core.handle(signal("SIGTERM"), 150);
    assert!(refused(&mut core, req).contains("closing"));
}

#[test]
fn one_upgrade_at_a_time_and_every_waiter_hears_the_outcome() {
    let mut core = upgrading();
    let a = core.handle(request(2), 220);
    assert!(!a.iter().any(|a| matches!(a, Action::SpawnMaster { .. })));
    assert_eq!(outcome(&a), None);
    let a = core.handle(Event::UpgradeReady { seq: 1 }, 1_210);
    assert_eq!(outcome(&a), Some((vec![1, 2], Ok(500))));
    assert!(has_log(
        &a,
        "[master] upgrade: new master pid 500 is ready after 1010ms"
    ));
    // The hand-over is a close without the shutdown delay, and it stays quiet to systemd.
    assert!(terminates_apps(&a));
    assert!(a.contains(&Action::StopAccepting));
    assert!(!a.iter().any(|a| matches!(a, Action::Notify(_))));
    assert!(!a.iter().any(|a| matches!(a, Action::StopMaster { .. })));
    // Later requests are refused: this master is closing.
    let a = core.handle(request(3), 1_300);
    assert!(matches!(outcome(&a), Some((_, Err(r))) if r.contains("closing")));
}

#[test]
fn a_new_master_that_dies_or_is_late_is_stopped_and_this_one_serves_on() {
    for late in [false, true] {
        let mut core = upgrading();
        let a = if late {
            core.handle(Event::Timer(Timer::UpgradeTimeout(1)), 300_200)
        } else {
            core.handle(
                Event::UpgradeFailed {
                    seq: 1,
                    reason: "the new master exited with code 1 before it was ready".into(),
                },
                900,
            )
        };
        assert!(a.contains(&Action::StopMaster {
            pid: 500,
            limit: Duration::from_secs(9),
        }));
        let (waiters, result) = outcome(&a).unwrap();
        assert_eq!(waiters, vec![1]);
        let reason = result.unwrap_err();
        assert!(
            reason.contains(if late {
                "not ready within 300000ms"
            } else {
                "code 1"
            }),
            "{reason}"
        );
        assert!(has_log(
            &a,
            &format!(
                "[master] upgrade failed (new master pid 500): {reason}; this master serves on"
            )
        ));
        assert!(!terminates_apps(&a));
        // Stale news of that upgrade changes nothing; a new one may start.
        assert!(core
            .handle(Event::UpgradeReady { seq: 1 }, 1_000)
            .is_empty());
        let a = core.handle(request(4), 1_100);
        assert!(a.contains(&Action::SpawnMaster { seq: 2, workers: 2 }));
    }
}

#[test]
fn a_new_master_that_cannot_be_spawned_fails_the_upgrade() {
    let (mut core, _) = started(2);
    core.handle(request(1), 200);
    let a = core.handle(
        Event::UpgradeSpawned {
            seq: 1,
            result: Err("ENOENT".into()),
        },
        201,
    );
    assert!(!a.iter().any(|a| matches!(a, Action::StopMaster { .. })));
    assert!(matches!(outcome(&a), Some((_, Err(r))) if r == "cannot start a new master: ENOENT"));
}

#[test]
fn a_signal_during_an_upgrade_stops_the_new_master_too() {
    let mut core = upgrading();
    let a = core.handle(signal("SIGTERM"), 400);
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::StopMaster { pid: 500, .. })));
    assert!(matches!(outcome(&a), Some((_, Err(r))) if r == "this master is closing"));
    assert!(terminates_apps(&a));
    // The lines say what happens: this master closes, it does not serve on.
    assert!(has_log(&a, "[master] upgrade abandoned: SIGTERM came before new master pid 500 was ready; it is stopped, and this master closes"));
    assert!(
        !logs(&a).iter().any(|l| l.contains("serves on")),
        "{:?}",
        logs(&a)
    );
    let close = logs(&a)
        .iter()
        .position(|l| l.contains("master is killed by signal SIGTERM"));
    let abandoned = logs(&a)
        .iter()
        .position(|l| l.contains("upgrade abandoned"));
    assert!(close < abandoned, "{:?}", logs(&a));
    // A new master that answers after the close is stopped as well.
    let (mut core, _) = started(2);
    core.handle(request(1), 200);
    core.handle(signal("SIGTERM"), 300);
    let a = core.handle(
        Event::UpgradeSpawned {
            seq: 1,
            result: Ok(501),
        },
        310,
    );
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::StopMaster { pid: 501, .. })));
}

#[test]
fn a_runtime_scale_is_carried_to_the_new_master() {
    let (mut core, _) = started(2);
    let a = core.handle(Event::Scale(Scale::By(1)), 100);
    let apps = a
        .iter()
        .find_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Scale,
                apps,
            } => Some(apps.clone()),
            _ => None,
        })
        .expect("scale spawn");
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Scale,
            apps: vec![Spawned {
                id: apps[0].0,
                slot: apps[0].1,
                pid: Ok(22),
            }],
        },
        101,
    );
    core.handle(listening(22, 7001), 150);
    let a = core.handle(request(1), 200);
    assert!(a.contains(&Action::SpawnMaster { seq: 1, workers: 3 }));

    // The new master starts that many, and says why it is not the option's count.
    let mut core = Core::new(
        Config {
            inherited_workers: Some(3),
            ..cfg(2)
        },
        0,
    );
    let a = core.handle(Event::Start, 0);
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Early,
        apps: vec![(1, 0), (2, 1), (3, 2)],
    }));
    assert!(has_log(
        &a,
        "[master] upgrade: starting 3 app workers as the previous master ran them (workers: 2 at its start)"
    ));
    // Bounded as scaling is.
    let core = Core::new(
        Config {
            inherited_workers: Some(40),
            ..cfg(2)
        },
        0,
    );
    assert_eq!(core.workers, 16);
}
