//! Hung children: found by their silence, reported, replaced; the boot timeout.

use std::time::Duration;

use super::*;

fn hung_cfg() -> Config {
    Config {
        worker_timeout: Some(Duration::from_millis(3000)),
        heartbeat_interval: Duration::from_millis(1000),
        start_timeout: Some(Duration::from_millis(5000)),
        ..cfg(2)
    }
}

fn collects(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CollectReport { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

#[test]
fn a_silent_serving_worker_is_hung_reported_and_replaced_then_killed() {
    let (mut core, last) = started_with(hung_cfg());
    assert!(last.contains(&Action::After(
        Duration::from_millis(1000),
        Timer::HungCheck
    )));
    // Both tick; then app 0 stops ticking at 1000.
    for t in [500, 1000] {
        core.handle(
            Event::Heartbeat {
                pid: app_pid(0),
                lag_ms: 3,
            },
            t,
        );
        core.handle(
            Event::Heartbeat {
                pid: app_pid(1),
                lag_ms: 0,
            },
            t,
        );
        core.handle(
            Event::Heartbeat {
                pid: AGENT,
                lag_ms: 0,
            },
            t,
        );
    }
    for t in [2000, 3000, 4000] {
        core.handle(
            Event::Heartbeat {
                pid: app_pid(1),
                lag_ms: 0,
            },
            t,
        );
        core.handle(
            Event::Heartbeat {
                pid: AGENT,
                lag_ms: 0,
            },
            t,
        );
        // the checks run every interval (one that comes much later means the master was away)
        if t < 4000 {
            assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), t)).is_empty());
        }
    }
    // Silent for exactly the timeout: not yet.
    let a = core.handle(Event::Timer(Timer::HungCheck), 4000);
    assert!(collects(&a).is_empty());
    assert!(a.contains(&Action::After(
        Duration::from_millis(1000),
        Timer::HungCheck
    )));
    let a = core.handle(Event::Timer(Timer::HungCheck), 4100);
    assert_eq!(collects(&a), [app_pid(0)]);
    let status = core.status();
    assert!(
        !status.master.healthy,
        "unhealthy while a hung worker is not replaced"
    );
    let c0 = &status.children[1];
    assert_eq!(
        (c0.pid, c0.hung_since, c0.lag_ms),
        (app_pid(0), Some(4100), Some(3))
    );
    // Found once.
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 5000)).is_empty());

    let report = HungReport {
        file: Some("run/hung.20.report.json".into()),
        frames: vec![
            "stuckForever (app/router.js:7:5)".into(),
            "Immediate.<anonymous> (app/router.js:12:9)".into(),
        ],
        not_written: None,
    };
    let a = core.handle(
        Event::HungReport {
            pid: app_pid(0),
            report,
        },
        5200,
    );
    let line = logs(&a)
        .into_iter()
        .find(|l| l.contains("has not answered"))
        .unwrap();
    assert_eq!(
        line,
        "[master] app_worker#1:20 has not answered for 3 s (event loop blocked) at stuckForever (app/router.js:7:5) < Immediate.<anonymous> (app/router.js:12:9); report: run/hung.20.report.json; replacing it"
    );
    let spawn = a.iter().find_map(|a| match a {
        Action::SpawnApps {
            batch: Batch::Replace,
            apps,
        } => Some(apps.clone()),
        _ => None,
    });
    assert_eq!(
        spawn,
        Some(vec![(3, 0)]),
        "a replacement in the hung worker's slot"
    );
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Replace,
            apps: vec![Spawned {
                id: 3,
                slot: 0,
                pid: Ok(30),
            }],
        },
        5300,
    );
    let a = core.handle(listening(30, 7001), 6000);
    // Serving: the hung one is SIGKILLed at once, it cannot drain.
    assert!(a.contains(&Action::Terminate {
        pid: app_pid(0),
        limit: Duration::ZERO
    }));
    let a = core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: None,
            signal: Some("SIGKILL"),
        },
        6100,
    );
    assert!(logs(&a)
        .iter()
        .any(|l| l.contains("rolling reload (workerTimeout) done")));
    let status = core.status();
    assert!(status.master.healthy);
    assert_eq!((status.master.hung, status.master.hung_replaced), (1, 1));
}

#[test]
fn a_hung_agent_is_reported_and_killed_for_egg_to_refork() {
    let (mut core, _) = started_with(hung_cfg());
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 2500)).is_empty());
    for pid in [app_pid(0), app_pid(1)] {
        core.handle(Event::Heartbeat { pid, lag_ms: 0 }, 3500);
    }
    let a = core.handle(Event::Timer(Timer::HungCheck), 3500);
    assert_eq!(
        collects(&a),
        [AGENT],
        "the agent never ticked since it started"
    );
    let a = core.handle(
        Event::HungReport {
            pid: AGENT,
            report: HungReport::default(),
        },
        6000,
    );
    assert!(logs(&a)
        .iter()
        .any(|l| l.contains("agent_worker#1:10 has not answered")
            && l.contains("report: none")
            && l.ends_with("killing it (egg reforks a dead agent after 1s)")));
    assert!(a.contains(&Action::Terminate {
        pid: AGENT,
        limit: Duration::ZERO
    }));
}

#[test]
fn a_report_the_run_dir_refused_is_a_warn_and_the_worker_is_replaced_all_the_same() {
    let (mut core, _) = started_with(hung_cfg());
    for t in [1000, 2000, 3000, 4000] {
        for pid in [app_pid(1), AGENT] {
            core.handle(Event::Heartbeat { pid, lag_ms: 0 }, t);
        }
        core.handle(Event::Timer(Timer::HungCheck), t);
    }
    let why = "run/ is not writable (No space left on device (os error 28))";
    let a = core.handle(
        Event::HungReport {
            pid: app_pid(0),
            report: HungReport {
                not_written: Some(why.into()),
                ..HungReport::default()
            },
        },
        4500,
    );
    let logs = logs(&a);
    assert!(logs.iter().any(|l| l
        == &format!("[master] the hung report of app_worker#1:20 could not be written: {why}")));
    assert!(logs.iter().any(|l| l.ends_with(&format!(
        "(event loop blocked); report: none (not written: {why}); replacing it"
    ))));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::SpawnApps {
            batch: Batch::Replace,
            ..
        }
    )));
}

#[test]
fn off_without_worker_timeout() {
    let (mut core, last) = started(2);
    assert!(!last
        .iter()
        .any(|a| matches!(a, Action::After(_, Timer::HungCheck))));
    assert!(core
        .handle(Event::Timer(Timer::HungCheck), 1_000_000)
        .is_empty());
}

#[test]
fn a_reforked_worker_that_never_listens_is_killed_and_reforked() {
    let (mut core, _) = started_with(hung_cfg());
    core.handle(
        Event::Exited {
            pid: app_pid(1),
            code: Some(1),
            signal: None,
        },
        1000,
    );
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 3,
                slot: 1,
                pid: Ok(31),
            }],
        },
        1000,
    );
    assert!(a.contains(&Action::After(
        Duration::from_millis(5000),
        Timer::StartTimeout { pid: 31 }
    )));
    // One that serves in time is left alone.
    let a = core.handle(Event::Timer(Timer::StartTimeout { pid: app_pid(0) }), 6000);
    assert!(a.is_empty());
    let a = core.handle(Event::Timer(Timer::StartTimeout { pid: 31 }), 6000);
    assert!(logs(&a).iter().any(|l| l
        == "[master] app_worker#3:31 did not listen within 5000ms of its start (state: none); killing it"));
    assert!(a.contains(&Action::Terminate {
        pid: 31,
        limit: Duration::ZERO
    }));
    let a = core.handle(
        Event::Exited {
            pid: 31,
            code: None,
            signal: Some("SIGKILL"),
        },
        6100,
    );
    assert!(a.iter().any(|a| matches!(
        a,
        Action::SpawnApps {
            batch: Batch::Refork,
            ..
        }
    )));
}

#[test]
fn a_master_that_was_stopped_takes_no_child_for_hung_once_continued() {
    let (mut core, _) = started_with(hung_cfg());
    let beat = |core: &mut Core, pid, t| {
        core.handle(Event::Heartbeat { pid, lag_ms: 0 }, t);
    };
    for t in [1000, 2000] {
        for pid in [app_pid(0), app_pid(1), AGENT] {
            beat(&mut core, pid, t);
        }
    }
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 2000)).is_empty());
    // SIGSTOP for 30 s: the next check runs 30 s late, before the queued beats are read
    let a = core.handle(Event::Timer(Timer::HungCheck), 32000);
    assert!(collects(&a).is_empty(), "{a:?}");
    assert!(logs(&a).iter().any(|l| l
        == "[master] this master did not run for 29.0 s (stopped, or starved of CPU): the children's silence is counted from now"));
    assert!(a.contains(&Action::After(
        Duration::from_millis(1000),
        Timer::HungCheck
    )));
    // the queued beats come in; app 0 was hung all along and sends none
    for pid in [app_pid(1), AGENT] {
        beat(&mut core, pid, 32001);
    }
    for t in [33000, 34000, 35000] {
        for pid in [app_pid(1), AGENT] {
            beat(&mut core, pid, t);
        }
        let a = core.handle(Event::Timer(Timer::HungCheck), t);
        assert!(collects(&a).is_empty(), "at {t}: {a:?}");
        assert!(logs(&a).is_empty());
    }
    // found once the timeout has passed since the master came back
    for pid in [app_pid(1), AGENT] {
        beat(&mut core, pid, 35100);
    }
    assert_eq!(
        collects(&core.handle(Event::Timer(Timer::HungCheck), 35100)),
        [app_pid(0)]
    );
}

#[test]
fn a_master_stopped_before_its_first_check_takes_no_child_for_hung() {
    // ready at 100: the first check is due at 1100, and runs 30 s late
    let (mut core, _) = started_with(hung_cfg());
    let a = core.handle(Event::Timer(Timer::HungCheck), 31100);
    assert!(collects(&a).is_empty(), "{a:?}");
    assert!(logs(&a)
        .iter()
        .any(|l| l.contains("this master did not run for 30.0 s")));
}
