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
    for t in [2000, 3000, 4000, 5000] {
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
    // The tick due at 2000 did not come: blocked since then, for exactly the timeout by
    // 5000. Not yet.
    let a = core.handle(Event::Timer(Timer::HungCheck), 5000);
    assert!(collects(&a).is_empty());
    assert!(a.contains(&Action::After(
        Duration::from_millis(1000),
        Timer::HungCheck
    )));
    let a = core.handle(Event::Timer(Timer::HungCheck), 5100);
    assert_eq!(collects(&a), [app_pid(0)]);
    assert!(a.contains(&Action::CollectReport {
        pid: app_pid(0),
        wait: Duration::from_secs(5),
        message: "egg-cluster-rs: app_worker#1:20 hung: no heartbeat for 4 s, its event loop blocked (workerTimeout 3000ms)".into(),
    }));
    let status = core.status();
    assert!(
        !status.master.healthy,
        "unhealthy while a hung worker is not replaced"
    );
    let c0 = &status.children[1];
    assert_eq!(
        (c0.pid, c0.hung_since, c0.lag_ms),
        (app_pid(0), Some(5100), Some(3))
    );
    // Found once.
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 5150)).is_empty());

    let report = HungReport {
        file: Ok("run/hung.20.report.json".into()),
        frames: vec![
            "stuckForever (app/router.js:7:5)".into(),
            "Immediate.<anonymous> (app/router.js:12:9)".into(),
        ],
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
        "[master] app_worker#1:20 has not answered for 4 s (event loop blocked) at stuckForever (app/router.js:7:5) < Immediate.<anonymous> (app/router.js:12:9); report: run/hung.20.report.json; replacing it"
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
            oom: None,
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
        core.handle(Event::Heartbeat { pid, lag_ms: 0 }, 4500);
    }
    let a = core.handle(Event::Timer(Timer::HungCheck), 4500);
    assert_eq!(
        collects(&a),
        [AGENT],
        "the agent never ticked since it started"
    );
    let a = core.handle(
        Event::HungReport {
            pid: AGENT,
            report: HungReport::none(NoReport::NotTaken),
        },
        6000,
    );
    assert!(logs(&a)
        .iter()
        .any(|l| l.contains("agent_worker#1:10 has not answered")
            && l.contains("report: not written (the worker's watchdog thread did not take the request: is the process stopped, or the thread gone?)")
            && l.ends_with("killing it (egg reforks a dead agent after 1s)")));
    assert!(a.contains(&Action::Terminate {
        pid: AGENT,
        limit: Duration::ZERO
    }));
    // A tick it sent before it died does not make it kept.
    let a = core.handle(
        Event::Heartbeat {
            pid: AGENT,
            lag_ms: 5000,
        },
        6010,
    );
    assert!(a.is_empty(), "{a:?}");
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
            oom: None,
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
            oom: None,
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

/// Ticks: app 1 and the agent every second up to `until`, app 0 up to `last0`; the master's
/// hung checks every second too (one that came much later would mean the master was away).
fn beats(core: &mut Core, last0: u64, until: u64) {
    for t in (1..=until / 1000).map(|s| s * 1000) {
        for pid in [app_pid(1), AGENT] {
            core.handle(Event::Heartbeat { pid, lag_ms: 0 }, t);
        }
        if t <= last0 {
            core.handle(
                Event::Heartbeat {
                    pid: app_pid(0),
                    lag_ms: 0,
                },
                t,
            );
        }
        assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), t)).is_empty());
    }
}

fn terminates(actions: &[Action]) -> Vec<(u32, Duration)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { pid, limit } => Some((*pid, *limit)),
            _ => None,
        })
        .collect()
}

fn report_found() -> HungReport {
    HungReport {
        file: Ok("run/hung.20.report.json".into()),
        frames: vec!["block (app/router.js:30:5)".into()],
    }
}

/// The threshold is the block, not the silence: a loop blocked for less than `workerTimeout`
/// may be silent for up to an interval more.
#[test]
fn a_block_shorter_than_the_timeout_is_not_hung() {
    let (mut core, _) = started_with(hung_cfg());
    // Ticked at 1000, then blocked from just before 2000 for 2.9 s: silent until 4900.
    beats(&mut core, 1000, 4000);
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 4890)).is_empty());
    core.handle(
        Event::Heartbeat {
            pid: app_pid(0),
            lag_ms: 2900,
        },
        4900,
    );
    assert!(collects(&core.handle(Event::Timer(Timer::HungCheck), 5900)).is_empty());
    assert_eq!(core.status().master.hung, 0);
}

/// Found hung, then it ticks before its report is in: it is kept, nothing kills it; where it
/// was blocked is still told.
#[test]
fn a_hung_worker_that_ticks_again_before_its_report_is_kept() {
    let (mut core, _) = started_with(hung_cfg());
    beats(&mut core, 1000, 5000);
    assert_eq!(
        collects(&core.handle(Event::Timer(Timer::HungCheck), 5100)),
        [app_pid(0)]
    );
    assert!(!core.status().master.healthy);
    let a = core.handle(
        Event::Heartbeat {
            pid: app_pid(0),
            lag_ms: 4200,
        },
        5300,
    );
    assert_eq!(
        logs(&a),
        ["[master] app_worker#1:20 answers again after 4 s (its event loop was blocked, not stuck for good); keeping it"]
    );
    let status = core.status();
    assert!(status.master.healthy);
    assert_eq!(status.children[1].hung_since, None);
    let a = core.handle(
        Event::HungReport {
            pid: app_pid(0),
            report: report_found(),
        },
        5400,
    );
    assert_eq!(
        logs(&a),
        ["[master] app_worker#1:20 was blocked at block (app/router.js:30:5); report: run/hung.20.report.json"]
    );
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::SpawnApps { .. } | Action::Terminate { .. })),
        "{a:?}"
    );
    // No report, nothing to tell.
    let (mut core2, _) = started_with(hung_cfg());
    beats(&mut core2, 1000, 5000);
    core2.handle(Event::Timer(Timer::HungCheck), 5100);
    core2.handle(
        Event::Heartbeat {
            pid: app_pid(0),
            lag_ms: 4200,
        },
        5300,
    );
    let a = core2.handle(
        Event::HungReport {
            pid: app_pid(0),
            report: HungReport::none(NoReport::NotTaken),
        },
        10_100,
    );
    assert!(a.is_empty(), "{a:?}");
}

/// Found hung and its replacement started; then it ticks: once the replacement serves, it is
/// drained like any replaced worker, not SIGKILLed with the requests it serves again.
#[test]
fn a_hung_worker_that_ticks_again_while_replaced_is_drained_not_killed() {
    let (mut core, _) = started_with(hung_cfg());
    beats(&mut core, 1000, 5000);
    core.handle(Event::Timer(Timer::HungCheck), 5100);
    let a = core.handle(
        Event::HungReport {
            pid: app_pid(0),
            report: report_found(),
        },
        5300,
    );
    assert!(logs(&a).iter().any(|l| l.ends_with("; replacing it")));
    spawned_replacement(&mut core, 3, 0, 30, 5300);
    let a = core.handle(
        Event::Heartbeat {
            pid: app_pid(0),
            lag_ms: 4500,
        },
        5500,
    );
    assert_eq!(
        logs(&a),
        ["[master] app_worker#1:20 answers again after 5 s (its event loop was blocked, not stuck for good); its replacement is on its way: it serves until then, and is then drained, not killed"]
    );
    let a = core.handle(listening(30, 7001), 7000);
    assert_eq!(terminates(&a), [(app_pid(0), Duration::from_secs(5))]);
}

/// Still hung when its replacement serves: SIGKILLed (it cannot drain). Still hung when its
/// replacement fails: SIGKILLed too (it serves nobody), and its slot reforked.
#[test]
fn a_worker_still_hung_when_its_replacement_serves_or_fails_is_killed() {
    for replacement_fails in [false, true] {
        let (mut core, _) = started_with(hung_cfg());
        beats(&mut core, 1000, 5000);
        core.handle(Event::Timer(Timer::HungCheck), 5100);
        core.handle(
            Event::HungReport {
                pid: app_pid(0),
                report: report_found(),
            },
            5300,
        );
        spawned_replacement(&mut core, 3, 0, 30, 5300);
        let a = if replacement_fails {
            core.handle(
                Event::Exited {
                    pid: 30,
                    code: Some(1),
                    signal: None,
                    oom: None,
                },
                6000,
            )
        } else {
            core.handle(listening(30, 7001), 6000)
        };
        assert_eq!(
            terminates(&a),
            [(app_pid(0), Duration::ZERO)],
            "replacement fails: {replacement_fails}"
        );
    }
}

#[test]
fn no_report_says_why() {
    let (mut core, _) = started_with(hung_cfg());
    beats(&mut core, 1000, 5000);
    core.handle(Event::Timer(Timer::HungCheck), 5100);
    let why = NoReport::Unwritable {
        dir: "run/".into(),
        error: "Not a directory (os error 20)".into(),
    };
    let a = core.handle(
        Event::HungReport {
            pid: app_pid(0),
            report: HungReport::none(why),
        },
        5200,
    );
    let logs = logs(&a);
    // The run dir that refuses the request refuses the report too: said as a WARN of its own,
    // and the worker is replaced all the same.
    assert!(logs.iter().any(|l| l
        == "[master] the hung report of app_worker#1:20 could not be written: run/ is not writable (Not a directory (os error 20))"), "{a:?}");
    assert!(logs.iter().any(|l| l.ends_with(
        "(event loop blocked); report: not written (cannot write to run/: Not a directory (os error 20)); replacing it"
    )), "{a:?}");
    assert!(a.iter().any(|x| matches!(
        x,
        Action::SpawnApps {
            batch: Batch::Replace,
            ..
        }
    )));
    for (why, shown) in [
        (
            NoReport::Thread,
            "none (worker threads have no watchdog thread to write one)",
        ),
        (
            NoReport::Failed("its JS thread did not stop within 3 s: stuck in native code?".into()),
            "not written (its JS thread did not stop within 3 s: stuck in native code?)",
        ),
        (
            NoReport::NotWritten(Duration::from_secs(5)),
            "not written (the worker's watchdog thread took the request and wrote nothing within 5 s)",
        ),
    ] {
        assert_eq!(why.shown(), shown);
    }
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
    for t in [33000, 34000, 35000, 36000] {
        for pid in [app_pid(1), AGENT] {
            beat(&mut core, pid, t);
        }
        let a = core.handle(Event::Timer(Timer::HungCheck), t);
        assert!(collects(&a).is_empty(), "at {t}: {a:?}");
        assert!(logs(&a).is_empty());
    }
    // found once the timeout and an interval have passed since the master came back
    for pid in [app_pid(1), AGENT] {
        beat(&mut core, pid, 36100);
    }
    assert_eq!(
        collects(&core.handle(Event::Timer(Timer::HungCheck), 36100)),
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
