//! worker_threads mode, decision by decision: children named by thread id, egg-cluster's thread
//! lines, no early start, one port per slot with `ports`, restart after 1 s in any env.

use super::*;

fn cfg_threads(workers: usize, ports: &[u16]) -> Config {
    Config {
        threads: true,
        slot_ports: ports.to_vec(),
        // the local env: process mode would never refork here
        is_production: false,
        ..cfg(workers)
    }
}

const AGENT_TID: u32 = 1;

fn tid(slot: usize) -> u32 {
    2 + slot as u32
}

/// Start; the agent thread spawned and started; the app threads spawned early, their spawn
/// answered before `agent-start` or (the JS thread was slow) after it.
fn threads_spawned_with(c: Config, answered_late: bool) -> Core {
    let workers = c.workers;
    let mut core = Core::new(c, 0);
    let a = core.handle(Event::Start, 0);
    assert!(a.contains(&Action::SpawnAgent { id: 1 }));
    let apps: Vec<(u32, usize)> = (0..workers).map(|i| (i as u32 + 1, i)).collect();
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Early,
        apps: apps.clone(),
    }));
    let a = core.handle(
        Event::AgentSpawned {
            id: 1,
            pid: Ok(AGENT_TID),
        },
        1,
    );
    assert_eq!(
        logs(&a),
        ["[master] agent_worker#1:1 start with worker_threads"]
    );
    let answer = Event::AppsSpawned {
        batch: Batch::Early,
        apps: apps
            .iter()
            .map(|&(id, slot)| Spawned {
                id,
                slot,
                pid: Ok(tid(slot)),
            })
            .collect(),
    };
    if !answered_late {
        assert!(logs(&core.handle(answer.clone(), 2)).is_empty());
    }
    let mut a = core.handle(
        to_master(Role::Agent, AGENT_TID, MasterAction::AgentStart, None),
        5,
    );
    assert!(!has_log(&a, "start appWorker with args"));
    if answered_late {
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::Release(_) | Action::SpawnApps { .. })));
        a = core.handle(answer, 6);
    }
    let tids: Vec<u32> = (0..workers).map(tid).collect();
    assert!(a.contains(&Action::Release(tids)), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    let expected: Vec<String> = (0..workers)
        .map(|i| format!("[master] app_worker#{} (tid:{}) start", i + 1, tid(i)))
        .collect();
    assert_eq!(
        logs(&a)
            .into_iter()
            .filter(|l| l.contains("(tid:"))
            .collect::<Vec<_>>(),
        expected
    );
    core
}

fn threads_spawned(c: Config) -> Core {
    threads_spawned_with(c, false)
}

#[test]
fn app_threads_start_early_and_are_released_at_agent_start_however_late_their_spawn_is_answered() {
    for late in [false, true] {
        let mut core = threads_spawned_with(cfg_threads(2, &[]), late);
        core.handle(listening(tid(0), 7001), 100);
        core.handle(listening(tid(1), 7001), 100);
        assert!(core.started(), "late: {late}");
    }
}

fn threads_started(c: Config, ports: &[i64]) -> (Core, Vec<Action>) {
    let mut core = threads_spawned(c);
    let mut last = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        core.handle(Event::Online { pid: tid(i) }, 50);
        last = core.handle(listening(tid(i), *port), 100);
    }
    (core, last)
}

#[test]
fn each_thread_counts_on_its_own_port_with_ports() {
    let mut core = threads_spawned(cfg_threads(2, &[7001, 7002]));
    // a listen on another thread's port does not count
    let a = core.handle(listening(tid(0), 7002), 100);
    assert!(!has_log(&a, "started at"), "{a:?}");
    let a = core.handle(listening(tid(0), 7001), 100);
    assert!(has_log(
        &a,
        "[master] app_worker#1:2 started at 7001, remain 1"
    ));
    let a = core.handle(listening(tid(1), 7002), 100);
    assert!(has_log(
        &a,
        "[master] app_worker#2:3 started at 7002, remain 0"
    ));
    assert!(core.started());
    // egg-pids are thread ids
    assert!(sends(&a).contains(&(
        Target::Child(AGENT_TID),
        r#"{"action":"egg-pids","to":"agent","data":[2,3],"from":"master"}"#.into()
    )));
}

#[test]
fn without_ports_every_thread_counts_on_the_one_port() {
    let (core, last) = threads_started(cfg_threads(3, &[]), &[7001, 7001, 7001]);
    assert!(core.started());
    assert!(has_log(
        &last,
        "[master] egg started on http://127.0.0.1:7001 (100ms)"
    ));
}

#[test]
fn a_thread_that_dies_after_the_start_is_restarted_after_1s_under_its_id_in_any_env() {
    let (mut core, _) = threads_started(cfg_threads(2, &[7001, 7002]), &[7001, 7002]);
    let a = core.handle(
        Event::Exited {
            pid: tid(1),
            code: Some(3),
            signal: None,
            oom: None,
        },
        200,
    );
    let l = logs(&a);
    assert!(
        l.contains(
            &"[master] app_worker#2:3 died (code: 3, signal: null, suicide: false, state: dead), current workers: [2,3]".to_string()
        ),
        "{l:?}"
    );
    // no cfork lines: cfork is not involved with threads
    assert!(!a.iter().any(|x| matches!(x, Action::Cfork(..))), "{a:?}");
    assert!(sends(&a).contains(&(
        Target::Parent,
        r#"{"action":"app-worker-died","to":"parent","from":"master"}"#.into()
    )));
    let timer = Timer::ReforkThread { id: 2, slot: 1 };
    assert!(a.contains(&Action::After(Duration::from_secs(1), timer)));
    let a = core.handle(Event::Timer(timer), 1200);
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Refork,
        apps: vec![(2, 1)],
    }));
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 2,
                slot: 1,
                pid: Ok(9),
            }],
        },
        1201,
    );
    assert_eq!(logs(&a), ["[master] app_worker#2 (tid:9) start"]);
    // it counts on its slot's port again
    let a = core.handle(listening(9, 7002), 1300);
    assert!(has_log(
        &a,
        "[master] app_worker#2:9 started at 7002, remain 0"
    ));
}

#[test]
fn a_thread_that_dies_before_the_start_fails_the_start() {
    let mut core = threads_spawned(cfg_threads(1, &[]));
    let a = core.handle(
        Event::Exited {
            pid: tid(0),
            code: Some(0),
            signal: None,
            oom: None,
        },
        100,
    );
    assert!(has_log(
        &a,
        "[master] app_worker#1:2 start fail, exiting with code:1"
    ));
    assert!(a.contains(&Action::Exit(1)));
}

#[test]
fn a_thread_error_is_logged_by_role() {
    let mut core = threads_spawned(cfg_threads(1, &[]));
    let a = core.handle(
        Event::ThreadError {
            pid: AGENT_TID,
            message: "boom\n    at x".into(),
        },
        10,
    );
    assert_eq!(
        a,
        [Action::LogError(
            "AgentWorkerError",
            "boom\n    at x".into()
        )]
    );
    let a = core.handle(
        Event::ThreadError {
            pid: tid(0),
            message: "boom".into(),
        },
        10,
    );
    assert_eq!(a, [Action::LogError("AppWorkerError", "boom".into())]);
}

#[test]
fn close_names_what_happens_to_each_thread_and_no_restart_follows() {
    let (mut core, _) = threads_started(cfg_threads(2, &[]), &[7001, 7001]);
    let a = core.handle(
        Event::Signal {
            name: "SIGTERM".into(),
            heap_limit: 0.0,
            heap_used: 0.0,
            mem_total: 0,
            mem_free: 0,
        },
        500,
    );
    assert!(has_log(
        &a,
        "[master] kill app_worker#1 (tid:2) (worker_threads): SIGTERM handlers now, worker.terminate() after 5000ms"
    ));
    assert!(a.contains(&Action::TerminateGroup {
        group: Group::Apps,
        pids: vec![2, 3],
        limit: Duration::from_secs(5),
    }));
    let a = core.handle(
        Event::Exited {
            pid: tid(0),
            code: Some(0),
            signal: None,
            oom: None,
        },
        510,
    );
    assert!(a.iter().all(|x| !matches!(x, Action::After(..))), "{a:?}");
    let a = core.handle(Event::Terminated(Group::Apps), 520);
    assert!(has_log(
        &a,
        "[master] kill agent_worker#1 (tid:1) (worker_threads): SIGTERM handlers now, worker.terminate() after 3000ms"
    ));
    assert!(!has_log(&a, "kill agent worker with signal SIGTERM"));
}
