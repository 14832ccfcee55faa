//! The core driven event by event, without processes: each event kind, and the decisions
//! egg-cluster's users rely on.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

pub(super) fn cfg(workers: usize) -> Config {
    Config {
        workers,
        framework_name: "egg".into(),
        framework_version: "3.0.0".into(),
        node_version: "v20.0.0".into(),
        is_production: true,
        verbose: Level::Info,
        env: Some("prod".into()),
        node_env: None,
        options_shown: json!({"workers": workers}),
        options_json: "{\"workers\":2}".into(),
        cluster_port: 4000,
        sticky: false,
        sticky_worker_port: None,
        port: Some(7001),
        debug_port: None,
        https: false,
        host_env: None,
        refork_limit: 60,
        refork_duration_ms: 60_000,
        health_interval: Duration::from_secs(10),
        app_close: CloseTimeout {
            shown: "5000".into(),
            limit: Duration::from_secs(5),
        },
        agent_close: CloseTimeout {
            shown: "3000".into(),
            limit: Duration::from_secs(3),
        },
        fault_injection: false,
        reload_timeout: Duration::from_secs(60),
        reload_concurrency: 1,
        max_memory: None,
        memory_check_interval: None,
        is_debug: false,
        dialect: Dialect::Egg3,
        egg: Some(Egg {
            dir: "/app/node_modules/egg".into(),
            version: "3.0.0".into(),
            wraps: None,
            cluster: Some("egg-cluster"),
            needs_node: Vec::new(),
        }),
        threads: false,
        slot_ports: Vec::new(),
        metrics_addr: None,
        shutdown_delay: Duration::ZERO,
        worker_timeout: None,
        heartbeat_interval: Duration::from_secs(1),
        start_timeout: None,
        upgrade_timeout: Duration::from_secs(300),
        is_pid1: false,
        max_workers: 16,
        inherited_workers: None,
    }
}

fn addr(port: i64) -> Value {
    json!({"addressType": 4, "address": null, "port": port})
}

pub(super) const AGENT: u32 = 10;

pub(super) fn app_pid(i: usize) -> u32 {
    20 + i as u32
}

fn sends(actions: &[Action]) -> Vec<(Target, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t, m) => Some((t.clone(), String::from_utf8(m.clone()).unwrap())),
            _ => None,
        })
        .collect()
}

pub(super) fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(_, m) | Action::LogError(_, m) | Action::Cfork(_, m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn has_log(actions: &[Action], needle: &str) -> bool {
    logs(actions).iter().any(|m| m.contains(needle))
}

pub(super) fn to_master(from: Role, pid: u32, action: MasterAction, data: Option<&str>) -> Event {
    Event::ToMaster {
        from,
        pid,
        action,
        data: data.map(|d| d.as_bytes().to_vec()),
        line: b"{}".to_vec(),
    }
}

pub(super) fn listening(pid: u32, port: i64) -> Event {
    Event::Listening {
        pid,
        address: addr(port),
        via: ListenVia::Cluster,
    }
}

/// Start, agent and `workers` early app workers spawned; the agent has not started yet.
fn spawned(c: Config) -> Core {
    let workers = c.workers;
    let mut core = Core::new(c, 0);
    let a = core.handle(Event::Start, 0);
    assert!(a.contains(&Action::SpawnAgent { id: 1 }));
    let apps: Vec<(u32, usize)> = (0..workers).map(|i| (i as u32 + 1, i)).collect();
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Early,
        apps: apps.clone(),
    }));
    core.handle(
        Event::AgentSpawned {
            id: 1,
            pid: Ok(AGENT),
        },
        1,
    );
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Early,
            apps: apps
                .iter()
                .map(|&(id, slot)| Spawned {
                    id,
                    slot,
                    pid: Ok(app_pid(slot)),
                })
                .collect(),
        },
        1,
    );
    core
}

/// ... and the agent started: the early workers are released.
pub(super) fn released(c: Config) -> Core {
    let workers = c.workers;
    let mut core = spawned(c);
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::AgentStart, None),
        5,
    );
    assert!(a.contains(&Action::Release((0..workers).map(app_pid).collect())));
    core
}

/// ... and every worker listens on the real port: ready. Returns the last decision.
pub(super) fn started(workers: usize) -> (Core, Vec<Action>) {
    started_with(cfg(workers))
}

pub(super) fn started_with(c: Config) -> (Core, Vec<Action>) {
    let workers = c.workers;
    let mut core = released(c);
    let mut last = Vec::new();
    for i in 0..workers {
        core.handle(Event::Online { pid: app_pid(i) }, 50);
        last = core.handle(listening(app_pid(i), 7001), 100);
    }
    (core, last)
}

#[test]
fn start_logs_egg_clusters_lines_then_spawns_the_agent_and_early_workers() {
    let mut core = Core::new(cfg(2), 0);
    let a = core.handle(Event::Start, 0);
    let l = logs(&a);
    assert_eq!(
        l[0],
        "[master] =================== egg start ====================="
    );
    assert_eq!(l[1], "[master] node version v20.0.0");
    assert_eq!(
        l[2],
        "[master] egg version 3.0.0 from /app/node_modules/egg: egg 3 dialect (egg-cluster's protocol)"
    );
    assert_eq!(l[3], "[master] start with options:\n{\n  \"workers\": 2\n}");
    assert_eq!(
        l[4],
        "[master] start with env: isProduction: true, EGG_SERVER_ENV: prod, NODE_ENV: undefined"
    );
    let a = core.handle(
        Event::AgentSpawned {
            id: 1,
            pid: Ok(AGENT),
        },
        1,
    );
    assert_eq!(
        logs(&a),
        ["[master] agent_worker#1:10 start with clusterPort:4000"]
    );
}

#[test]
fn early_workers_get_nothing_until_the_agent_starts() {
    let mut core = spawned(cfg(2));
    assert_eq!(core.routes.apps, Vec::<u32>::new());
    assert_eq!(core.routes.agent, Some(AGENT));
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::AgentStart, None),
        5,
    );
    // agent-start and egg-pids went to nobody (no worker was reachable yet) ...
    assert!(sends(&a)
        .iter()
        .all(|(t, _)| *t == Target::Children(vec![])));
    // ... then the workers are released, logged as egg-cluster forks them, and reachable.
    assert!(a.contains(&Action::Release(vec![20, 21])));
    assert!(has_log(&a, "[master] start appWorker with args"));
    assert!(has_log(
        &a,
        "[master] app_worker#2:21 start, state: none, current workers: [\"1\",\"2\"]"
    ));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Routes(_, r) if *r == Routes {
            agent: Some(AGENT),
            apps: vec![20, 21],
            slots: vec![],
        })));
    // A second agent-start (a new agent) does not start workers again.
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::AgentStart, None),
        6,
    );
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::Release(_) | Action::SpawnApps { .. })));
}

#[test]
fn a_worker_that_could_not_start_early_is_spawned_at_agent_start() {
    let mut core = Core::new(cfg(2), 0);
    core.handle(Event::Start, 0);
    core.handle(
        Event::AgentSpawned {
            id: 1,
            pid: Ok(AGENT),
        },
        0,
    );
    // One of the two could not be spawned early: egg-cluster would fork it at agent-start.
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Early,
            apps: vec![Spawned {
                id: 1,
                slot: 0,
                pid: Ok(20),
            }],
        },
        0,
    );
    assert!(!a.iter().any(|x| matches!(x, Action::Exit(_))));
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::AgentStart, None),
        1,
    );
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Start,
        apps: vec![(3, 1)],
    }));
}

#[test]
fn ready_after_every_worker_listens_on_the_real_port() {
    let (core, last) = started(2);
    assert!(core.started());
    let ready = last.iter().find_map(|a| match a {
        Action::Ready(v) => Some(v.clone()),
        _ => None,
    });
    assert_eq!(
        ready.unwrap(),
        json!({"port": 7001, "address": "http://127.0.0.1:7001", "protocol": "http"})
    );
    let s = sends(&last);
    assert!(s.contains(&(
        Target::Parent,
        r#"{"action":"egg-ready","to":"parent","data":{"port":7001,"address":"http://127.0.0.1:7001","protocol":"http"},"from":"master"}"#.into()
    )));
    assert!(s.contains(&(
        Target::Child(AGENT),
        r#"{"action":"egg-pids","to":"agent","data":[20,21],"from":"master"}"#.into()
    )));
    assert!(s.contains(&(
        Target::Child(21),
        r#"{"action":"egg-pids","to":"app","data":[10],"from":"master"}"#.into()
    )));
    assert!(s.contains(&(
        Target::Children(vec![20, 21]),
        r#"{"action":"egg-ready","to":"app","data":{"workers":2},"from":"master"}"#.into()
    )));
    assert!(has_log(
        &last,
        "[master] egg started on http://127.0.0.1:7001 (100ms)"
    ));
    assert!(has_log(
        &last,
        "[master] app_worker#2:21 started at 7001, remain 0 (95ms)"
    ));
    // The health check starts in production.
    assert!(last.contains(&Action::After(Duration::from_secs(10), Timer::HealthCheck)));
}

#[test]
fn other_ports_do_not_count() {
    let mut core = released(cfg(1));
    let a = core.handle(listening(20, 9999), 2);
    assert!(!core.started());
    assert!(sends(&a).is_empty());
    assert!(has_log(&a, "app_worker#1:20 listening on"));
    core.handle(listening(20, 7001), 3);
    assert!(core.started());
}

#[test]
fn a_worker_counts_once_however_it_reports_listening() {
    let mut core = released(cfg(2));
    core.handle(listening(20, 7001), 2);
    let a = core.handle(
        to_master(
            Role::App,
            20,
            MasterAction::ReusePortListening,
            Some(r#"{"addressType":4,"address":null,"port":7001}"#),
        ),
        3,
    );
    assert!(has_log(&a, "reuse-port listening on"));
    assert!(!core.started(), "the same worker must not count twice");
    core.handle(
        to_master(
            Role::App,
            21,
            MasterAction::ReusePortListening,
            Some(r#"{"addressType":4,"address":null,"port":7001}"#),
        ),
        4,
    );
    assert!(core.started());
}

#[test]
fn sticky_reports_ready_only_after_its_server_listens() {
    let mut c = cfg(1);
    c.sticky = true;
    c.sticky_worker_port = Some(4500);
    let mut core = released(c.clone());
    assert!(core
        .handle(listening(20, 7001), 2)
        .iter()
        .all(|a| !matches!(a, Action::ListenSticky { .. })));
    let a = core.handle(listening(20, 4500), 3);
    assert!(a.contains(&Action::ListenSticky { port: 7001 }));
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::Ready(_) | Action::Send(Target::Parent, _))));
    // The sticky routes: slot 0 is served by the worker.
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Routes(_, r) if r.slots == vec![Some(20)])));
    let a = core.handle(Event::StickyListening(Ok(())), 4);
    assert!(logs(&a).iter().any(|m| m
        .starts_with("[master] egg started on http://127.0.0.1:7001 (")
        && m.ends_with(" with STICKY MODE!")));
    assert!(a.iter().any(|x| matches!(x, Action::Ready(_))));

    let mut core = released(c);
    core.handle(listening(20, 4500), 3);
    let a = core.handle(Event::StickyListening(Err("EADDRINUSE".into())), 4);
    assert!(has_log(
        &a,
        "[master] sticky server failed to listen on the app port: EADDRINUSE"
    ));
    assert_eq!(a.last(), Some(&Action::Exit(1)));
}

#[test]
fn health_check_exits_after_three_bad_checks_in_a_row() {
    let (mut core, _) = started(2);
    let a = core.handle(Event::Timer(Timer::HealthCheck), 200);
    assert_eq!(
        a,
        [Action::After(Duration::from_secs(10), Timer::HealthCheck)]
    );
    // No live worker (both disconnected): two strikes, three strikes exit.
    core.handle(
        Event::ChannelClosed {
            pid: 20,
            reason: None,
        },
        201,
    );
    core.handle(
        Event::ChannelClosed {
            pid: 21,
            reason: None,
        },
        202,
    );
    assert!(!core
        .handle(Event::Timer(Timer::HealthCheck), 203)
        .contains(&Action::Exit(1)));
    assert!(!core
        .handle(Event::Timer(Timer::HealthCheck), 204)
        .contains(&Action::Exit(1)));
    let a = core.handle(Event::Timer(Timer::HealthCheck), 205);
    assert_eq!(a.last(), Some(&Action::Exit(1)));
    assert!(a.iter().any(|x| matches!(x, Action::LogError("ClusterWorkerExceptionError", m) if m == "[master] 1 agent and 0 worker(s) alive, exit to avoid unknown state")));

    // No started agent.
    let (mut core, _) = started(1);
    core.handle(
        Event::Exited {
            pid: AGENT,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        300,
    );
    core.handle(Event::Timer(Timer::HealthCheck), 301);
    core.handle(Event::Timer(Timer::HealthCheck), 302);
    let a = core.handle(Event::Timer(Timer::HealthCheck), 303);
    assert!(has_log(&a, "[master] 0 agent and 1 worker(s)"));
}

#[test]
fn health_check_counts_one_outage_not_three_short_ones() {
    // The long soak's failure: an agent SIGKILLed and reforked every ~10 s, each time just
    // before a check: three checks in a row found no started agent, though it served between.
    let (mut core, _) = started(1);
    let mut agent = AGENT;
    for (i, t) in [1_000u64, 11_000, 21_000].into_iter().enumerate() {
        core.handle(
            Event::Exited {
                pid: agent,
                code: None,
                signal: Some("SIGKILL"),
                oom: None,
            },
            t,
        );
        let a = core.handle(Event::Timer(Timer::HealthCheck), t + 100);
        assert!(!a.contains(&Action::Exit(1)), "check {i} exited");
        core.handle(Event::Timer(Timer::ReforkAgent), t + 1_000);
        let pid = 100 + i as u32;
        core.handle(
            Event::AgentSpawned {
                id: 2 + i as u32,
                pid: Ok(pid),
            },
            t + 1_001,
        );
        core.handle(
            to_master(Role::Agent, pid, MasterAction::AgentStart, None),
            t + 2_000,
        );
        agent = pid;
    }
    // A real outage of three checks still exits.
    core.handle(
        Event::Exited {
            pid: agent,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        40_000,
    );
    core.handle(Event::Timer(Timer::HealthCheck), 40_100);
    core.handle(Event::Timer(Timer::HealthCheck), 50_100);
    let a = core.handle(Event::Timer(Timer::HealthCheck), 60_100);
    assert!(has_log(&a, "[master] 0 agent and 1 worker(s)"));
    assert_eq!(a.last(), Some(&Action::Exit(1)));
}

#[test]
fn realport_changes_the_expected_port_and_host_env_the_address() {
    let mut c = cfg(1);
    c.port = None;
    c.host_env = Some("example.test".into());
    let mut core = released(c);
    let a = core.handle(
        to_master(
            Role::App,
            20,
            MasterAction::Realport,
            Some(r#"{"port":8080,"protocol":"https","reusePort":true}"#),
        ),
        2,
    );
    assert_eq!(a, [Action::ReusePort { pid: 20 }]);
    let a = core.handle(listening(20, 8080), 2);
    assert!(logs(&a)
        .iter()
        .any(|m| m.starts_with("[master] egg started on https://example.test:8080 (")));
}

#[test]
fn death_before_ready_exits_1_after_ready_reforks_in_production() {
    let mut core = released(cfg(2));
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(1),
            signal: None,
            oom: None,
        },
        10,
    );
    assert!(has_log(
        &a,
        "[master] app_worker#1:20 start fail, exiting with code:1"
    ));
    assert_eq!(a.last(), Some(&Action::Exit(1)));
    // Nothing happens after the exit.
    assert!(core.handle(Event::Timer(Timer::HealthCheck), 11).is_empty());

    let (mut core, _) = started(2);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        200,
    );
    // The replacement takes the dead worker's slot.
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Refork,
        apps: vec![(3, 0)],
    }));
    assert!(a.iter().any(|x| matches!(x, Action::LogError("AppWorkerDiedError", m) if m == "[master] app_worker#1:20 died (code: null, signal: SIGKILL, suicide: false, state: dead), current workers: [20,21]")));
    assert!(sends(&a)
        .iter()
        .any(|(t, m)| *t == Target::Parent && m.contains("app-worker-died")));
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 3,
                slot: 0,
                pid: Ok(30),
            }],
        },
        201,
    );
    assert!(a.contains(&Action::Cfork(
        true,
        "new worker:30 fork (state: none)".into()
    )));
    // The replacement joins an app that is up: it alone gets egg-ready.
    let a = core.handle(listening(30, 7001), 300);
    assert!(sends(&a).contains(&(
        Target::Child(30),
        r#"{"action":"egg-ready","to":"app","data":{"workers":2},"from":"master"}"#.into()
    )));
}

#[test]
fn a_disconnect_decides_the_refork_and_the_exit_is_then_expected() {
    let (mut core, _) = started(2);
    let a = core.handle(
        Event::ChannelClosed {
            pid: 20,
            reason: Some("bad input".into()),
        },
        200,
    );
    assert!(has_log(
        &a,
        "[master] closed the channel of app_worker#1:20: bad input"
    ));
    assert!(has_log(
        &a,
        "[master] app_worker#1:20 disconnect, suicide: false, state: disconnected, current workers: [\"1\",\"2\"]"
    ));
    assert!(a.iter().any(|x| matches!(
        x,
        Action::SpawnApps {
            batch: Batch::Refork,
            ..
        }
    )));
    assert!(a.contains(&Action::Terminate {
        pid: 20,
        limit: Duration::from_secs(5)
    }));
    // No longer reachable.
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Routes(_, r) if r.apps == vec![21])));
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(0),
            signal: None,
            oom: None,
        },
        201,
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Cfork(_, m) if m.contains("isExpected: true"))));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
}

#[test]
fn refork_limit_then_backoff_through_a_timer() {
    let mut c = cfg(1);
    c.refork_limit = 2;
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    let exit = |core: &mut Core, pid, now| {
        core.handle(
            Event::Exited {
                pid,
                code: Some(1),
                signal: None,
                oom: None,
            },
            now,
        )
    };
    assert!(exit(&mut core, 20, 20)
        .iter()
        .any(|x| matches!(x, Action::SpawnApps { .. })));
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 2,
                slot: 0,
                pid: Ok(30),
            }],
        },
        21,
    );
    let a = exit(&mut core, 30, 22);
    assert!(a.contains(&Action::After(Duration::from_millis(100), Timer::ReforkApp)));
    assert!(has_log(&a, "worker died too fast"));
    assert!(has_log(&a, "[master] dead app workers are not replaced now: crash loop: 2 deaths within 60000ms (the refork limit), backing off 100ms; 0 of 1 app workers serving"));
    assert_eq!(
        core.status().master.refork_held.as_deref(),
        Some("crash loop: 2 deaths within 60000ms (the refork limit), backing off 100ms")
    );
    assert!(!core.status().master.healthy);
    let a = core.handle(Event::Timer(Timer::ReforkApp), 130);
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Refork,
        apps: vec![(3, 0)],
    }));
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 3,
                slot: 0,
                pid: Ok(40),
            }],
        },
        131,
    );
    core.handle(listening(40, 7001), 140);
    // Every slot serves again: the crash loop no longer holds anything back.
    assert_eq!(core.status().master.refork_held, None);
}

#[test]
fn local_env_does_not_refork() {
    let mut c = cfg(1);
    c.is_production = false;
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(1),
            signal: None,
            oom: None,
        },
        20,
    );
    assert!(a.contains(&Action::Cfork(
        true,
        "don't fork new work (refork: false)".into()
    )));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    assert!(has_log(&a, "[master] dead app workers are not replaced now: refork is off outside production (egg env local or unittest); 0 of 1 app workers serving"));
    let status = core.status();
    assert!(!status.master.healthy);
    assert!(status.master.refork_held.is_some());
}

#[test]
fn agent_death_before_ready_exits_after_ready_reforks_after_1s() {
    let mut core = spawned(cfg(1));
    let a = core.handle(
        Event::Exited {
            pid: AGENT,
            code: Some(1),
            signal: None,
            oom: None,
        },
        3,
    );
    assert!(has_log(
        &a,
        "[master] agent_worker#1:10 start fail, exiting with code:1"
    ));
    assert_eq!(a.last(), Some(&Action::Exit(1)));

    let (mut core, _) = started(1);
    let a = core.handle(
        Event::Exited {
            pid: AGENT,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        200,
    );
    assert!(a.contains(&Action::After(Duration::from_secs(1), Timer::ReforkAgent)));
    assert!(sends(&a).contains(&(
        Target::Children(vec![20]),
        r#"{"action":"egg-pids","to":"app","data":[],"from":"master"}"#.into()
    )));
    let a = core.handle(Event::Timer(Timer::ReforkAgent), 1200);
    assert!(has_log(&a, "[master] new agent_worker starting..."));
    assert!(a.contains(&Action::SpawnAgent { id: 2 }));
    core.handle(Event::AgentSpawned { id: 2, pid: Ok(11) }, 1201);
    // The new agent's start: egg-ready (the app is up) and the listening workers for it,
    // agent-start to the workers; no worker is started again.
    let a = core.handle(
        to_master(Role::Agent, 11, MasterAction::AgentStart, None),
        1300,
    );
    let s = sends(&a);
    assert!(s.contains(&(
        Target::Child(11),
        r#"{"action":"egg-pids","to":"agent","data":[20],"from":"master"}"#.into()
    )));
    assert!(s
        .iter()
        .any(|(t, m)| *t == Target::Child(11) && m.contains("egg-ready")));
    assert!(s
        .iter()
        .any(|(t, m)| *t == Target::Children(vec![20]) && m.contains("agent-start")));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
}

#[test]
fn spawn_failures_before_ready_exit_1() {
    let mut core = Core::new(cfg(1), 0);
    core.handle(Event::Start, 0);
    let a = core.handle(
        Event::AgentSpawned {
            id: 1,
            pid: Err("ENOENT".into()),
        },
        0,
    );
    assert!(has_log(
        &a,
        "[master] failed to spawn agent_worker#1: ENOENT"
    ));
    assert_eq!(a.last(), Some(&Action::Exit(1)));

    let mut core = released(cfg(2));
    core.handle(
        Event::Exited {
            pid: 21,
            code: None,
            signal: None,
            oom: None,
        },
        1,
    );
    let mut core2 = spawned(cfg(1));
    let a = core2.handle(
        Event::AppsSpawned {
            batch: Batch::Start,
            apps: vec![Spawned {
                id: 9,
                slot: 1,
                pid: Err("EAGAIN".into()),
            }],
        },
        2,
    );
    assert!(has_log(&a, "[master] failed to spawn app_worker#9: EAGAIN"));
    assert_eq!(a.last(), Some(&Action::Exit(1)));
    drop(core);
}

/// A spawn that fails for want of a resource of the master's (here EMFILE, as under a flood
/// of connections) is no crash of the app: it is retried after a short, growing delay and
/// never counted against the refork limit, which stays for real deaths.
#[test]
fn a_spawn_short_of_a_resource_is_retried_outside_the_refork_limit() {
    let (mut core, _) = started_with(Config {
        refork_limit: 4,
        ..cfg(2)
    });
    // Death 1.
    let a = core.handle(
        Event::Exited {
            pid: app_pid(1),
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        1000,
    );
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Refork,
        apps: vec![(3, 1)],
    }));
    let emfile = || SpawnError::Resource("Too many open files (os error 24)".into());
    let mut id = 3;
    for (i, delay) in [100, 200, 400, 800, 1600, 3200, 5000, 5000]
        .into_iter()
        .enumerate()
    {
        let a = core.handle(
            Event::AppsSpawned {
                batch: Batch::Refork,
                apps: vec![Spawned {
                    id,
                    slot: 1,
                    pid: Err(emfile()),
                }],
            },
            2000 + i as u64,
        );
        // said once, when the streak begins
        if i == 0 {
            assert_eq!(
                logs(&a),
                [format!("[master] cannot spawn app_worker#{id}: Too many open files (os error 24): the master is short of a resource, not a crash of the app; trying again in {delay}ms, then less often (up to every 5s), said again once spawning works")]
            );
        } else {
            assert_eq!(logs(&a), Vec::<String>::new());
        }
        assert!(a.contains(&Action::After(
            Duration::from_millis(delay),
            Timer::ReforkApp
        )));
        let status = core.status();
        assert!(!status.master.healthy);
        assert_eq!(status.master.backoff_ms, 0, "no crash loop");
        assert!(status
            .master
            .refork_held
            .as_deref()
            .is_some_and(|r| r.contains("short of a resource")));
        id += 1;
        let a = core.handle(Event::Timer(Timer::ReforkApp), 3000 + i as u64);
        assert!(a.contains(&Action::SpawnApps {
            batch: Batch::Refork,
            apps: vec![(id, 1)],
        }));
    }
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id,
                slot: 1,
                pid: Ok(40),
            }],
        },
        4000,
    );
    assert!(has_log(
        &a,
        "[master] spawning works again after 8 failed attempts in 2000ms"
    ));
    core.handle(listening(40, 7001), 4100);
    let status = core.status();
    assert!(status.master.healthy);
    assert_eq!(status.master.refork_held, None);

    // The refork limit was kept for real deaths: deaths 2 and 3 are reforked at once (the
    // 4th would back off); the next resource failure waits the shortest delay again.
    for (n, pid) in [(1, 40), (2, 41)] {
        let a = core.handle(
            Event::Exited {
                pid,
                code: Some(1),
                signal: None,
                oom: None,
            },
            5000 + n,
        );
        assert!(
            a.iter().any(|a| matches!(
                a,
                Action::SpawnApps {
                    batch: Batch::Refork,
                    ..
                }
            )),
            "death {n}: {a:?}"
        );
        core.handle(
            Event::AppsSpawned {
                batch: Batch::Refork,
                apps: vec![Spawned {
                    id: 20 + n as u32,
                    slot: 1,
                    pid: Ok(pid + 1),
                }],
            },
            5000 + n,
        );
    }
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: 30,
                slot: 1,
                pid: Err(emfile()),
            }],
        },
        6000,
    );
    assert!(a.contains(&Action::After(Duration::from_millis(100), Timer::ReforkApp)));
}

pub(super) fn signal(name: &str) -> Event {
    Event::Signal {
        name: name.into(),
        heap_limit: 0.0,
        heap_used: 0.0,
        mem_total: 0,
        mem_free: 0,
    }
}

fn terminates_apps(actions: &[Action]) -> bool {
    actions.contains(&Action::TerminateGroup {
        group: Group::Apps,
        pids: vec![app_pid(0), app_pid(1)],
        limit: Duration::from_secs(5),
    })
}

#[test]
fn a_shutdown_delay_ends_readiness_at_once_and_closes_after_it_or_at_a_second_signal() {
    for second_signal in [false, true] {
        let (mut core, _) = started_with(Config {
            shutdown_delay: Duration::from_millis(4000),
            ..cfg(2)
        });
        let a = core.handle(signal("SIGTERM"), 300);
        assert!(has_log(
            &a,
            "[master] shutdownDelay: not ready any more, the workers serve for another 4000ms before the close"
        ));
        assert!(a.contains(&Action::After(
            Duration::from_millis(4000),
            Timer::ShutdownDelay
        )));
        assert!(!terminates_apps(&a), "{a:?}");
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Notify(n) if n.phase == Some(OpsPhase::Closing))));
        assert!(!core.status().master.ready);
        // A worker that dies meanwhile is not replaced.
        let a = core.handle(
            Event::Exited {
                pid: app_pid(1),
                code: Some(1),
                signal: None,
                oom: None,
            },
            400,
        );
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::After(..) | Action::SpawnApps { .. })));
        let a = if second_signal {
            let a = core.handle(signal("SIGINT"), 500);
            assert!(has_log(
                &a,
                "[master] SIGINT during the shutdown delay: closing now"
            ));
            a
        } else {
            core.handle(Event::Timer(Timer::ShutdownDelay), 4300)
        };
        assert!(has_log(
            &a,
            "[master] send kill SIGTERM to app workers, will exit with code:0 after 5000ms"
        ));
        assert!(a.contains(&Action::TerminateGroup {
            group: Group::Apps,
            pids: vec![app_pid(0)],
            limit: Duration::from_secs(5),
        }));
        // Once closing, neither the timer nor a signal starts it again.
        for e in [Event::Timer(Timer::ShutdownDelay), signal("SIGTERM")] {
            assert!(!core
                .handle(e, 4400)
                .iter()
                .any(|x| matches!(x, Action::TerminateGroup { .. })));
        }
    }
    // Without a delay the close begins at once.
    let (mut core, _) = started(2);
    assert!(terminates_apps(&core.handle(signal("SIGTERM"), 300)));
}

#[test]
fn close_terminates_apps_then_the_agent_then_exits_0_and_signals_are_once() {
    let (mut core, _) = started(2);
    let a = core.handle(
        Event::Signal {
            name: "SIGTERM".into(),
            heap_limit: 1.0,
            heap_used: 2.0,
            mem_total: 3,
            mem_free: 4,
        },
        300,
    );
    assert_eq!(
        logs(&a),
        [
            "[master] master is killed by signal SIGTERM, closing",
            "[master] system memory: total 3, free 4",
            "[master] process info: heap_limit 1, heap_used 2",
            "[master] send kill SIGTERM to app workers, will exit with code:0 after 5000ms",
            "[master] wait 5000ms",
        ]
    );
    assert!(a.contains(&Action::TerminateGroup {
        group: Group::Apps,
        pids: vec![20, 21],
        limit: Duration::from_secs(5),
    }));
    // A second signal changes nothing; deaths while closing are not reforked.
    assert!(core
        .handle(
            Event::Signal {
                name: "SIGINT".into(),
                heap_limit: 0.0,
                heap_used: 0.0,
                mem_total: 0,
                mem_free: 0,
            },
            301
        )
        .is_empty());
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(0),
            signal: None,
            oom: None,
        },
        302,
    );
    assert!(a
        .iter()
        .all(|x| matches!(x, Action::Cfork(false, _) | Action::Routes(..))));
    let a = core.handle(Event::Terminated(Group::Apps), 400);
    assert!(has_log(
        &a,
        "[master] send kill SIGTERM to agent worker, will exit with code:0 after 3000ms"
    ));
    assert!(a.contains(&Action::TerminateGroup {
        group: Group::Agent,
        pids: vec![AGENT],
        limit: Duration::from_secs(3),
    }));
    assert!(core
        .handle(
            Event::Exited {
                pid: AGENT,
                code: Some(0),
                signal: None,
                oom: None,
            },
            401
        )
        .iter()
        .all(|x| matches!(x, Action::Routes(..))));
    let a = core.handle(Event::Terminated(Group::Agent), 500);
    assert!(a.contains(&Action::FindOrphans { at_close: true }));
    let a = core.handle(
        Event::Orphans {
            found: Vec::new(),
            at_close: true,
        },
        501,
    );
    assert!(has_log(&a, "[master] close done, exiting with code:0"));
    assert_eq!(a.last(), Some(&Action::Exit(0)));
}

#[test]
fn bad_input_is_logged_with_the_childs_name_rate_limited() {
    let (mut core, _) = started(1);
    let mut logged = Vec::new();
    for n in 1..=64u64 {
        let a = core.handle(
            Event::Malformed {
                pid: 20,
                reason: "not JSON".into(),
            },
            n,
        );
        if !a.is_empty() {
            logged.push(n);
        }
    }
    let expected: Vec<u64> = (1..=16).chain([32, 64]).collect();
    assert_eq!(logged, expected);
    let a = core.handle(
        Event::Malformed {
            pid: 20,
            reason: "x".into(),
        },
        0,
    );
    assert!(a.is_empty());
    let a = core.handle(
        Event::Malformed {
            pid: 0,
            reason: "x".into(),
        },
        0,
    );
    assert!(has_log(
        &a,
        "dropped a malformed message from parent (1 so far): x"
    ));
    let a = core.handle(
        Event::NotReading {
            pid: AGENT,
            queued: 99,
        },
        0,
    );
    assert!(has_log(
        &a,
        "[master] agent_worker#1:10 is not reading its channel: dropping messages to it (99 bytes queued)"
    ));
}

#[test]
fn actions_eventemitter_treats_specially_are_dropped_and_counted() {
    let (mut core, _) = started(1);
    for action in [
        MasterAction::Error,
        MasterAction::NewListener,
        MasterAction::RemoveListener,
        MasterAction::ReloadDone,
    ] {
        let a = core.handle(to_master(Role::App, 20, action, None), 0);
        assert!(
            !a.iter().any(|x| matches!(x, Action::EmitMaster(_))),
            "{a:?}"
        );
        assert!(has_log(
            &a,
            &format!(
                "[master] dropped a malformed message from app_worker#1:20 ({} so far): action '{}' is reserved for the master's EventEmitter",
                [MasterAction::Error, MasterAction::NewListener, MasterAction::RemoveListener, MasterAction::ReloadDone]
                    .iter()
                    .position(|x| *x == action)
                    .unwrap()
                    + 1,
                action.reserved_name()
            )
        ), "{a:?}");
    }
    assert_eq!(
        MasterAction::from_raw(Some(br#""error""#)),
        MasterAction::Error
    );
    assert_eq!(
        MasterAction::from_raw(Some(b"\"newListener\"")),
        MasterAction::NewListener
    );
    assert_eq!(
        MasterAction::from_raw(Some(b"\"__proto__\"")),
        MasterAction::Other
    );
}

#[test]
fn other_messages_to_the_master_go_to_js_and_panics_are_opt_in() {
    let (mut core, _) = started(1);
    let a = core.handle(to_master(Role::App, 20, MasterAction::Other, None), 0);
    assert_eq!(a, [Action::EmitMaster(b"{}".to_vec())]);
    let a = core.handle(to_master(Role::App, 20, MasterAction::InjectPanic, None), 0);
    assert_eq!(a, [Action::EmitMaster(b"{}".to_vec())]);
    let mut c = cfg(1);
    c.fault_injection = true;
    let mut core = released(c);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        core.handle(to_master(Role::App, 20, MasterAction::InjectPanic, None), 0)
    }));
    assert!(panicked.is_err());
}

#[test]
fn exited_after_disconnect_shows_in_the_lines() {
    let (mut core, _) = started(1);
    assert!(core
        .handle(Event::ExitedAfterDisconnect { pid: 20 }, 0)
        .is_empty());
    let a = core.handle(
        Event::ChannelClosed {
            pid: 20,
            reason: None,
        },
        1,
    );
    assert!(has_log(&a, "app_worker#1:20 disconnect, suicide: true"));
}

#[test]
fn address_rules() {
    assert_eq!(
        get_address(None, Some(1), "http", Some("0.0.0.0")),
        "http://127.0.0.1:1"
    );
    assert_eq!(
        get_address(Some("::1"), Some(1), "http", Some("h")),
        "http://::1:1"
    );
    assert_eq!(
        get_address(None, Some(1), "https", Some("h")),
        "https://h:1"
    );
}

#[test]
fn a_replacement_takes_the_slot_of_the_worker_it_replaces() {
    let (mut core, _) = started(3);
    // The middle worker's channel closes first (refork decided there), then it exits.
    let a = core.handle(
        Event::ChannelClosed {
            pid: 21,
            reason: None,
        },
        200,
    );
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Refork,
        apps: vec![(4, 1)],
    }));
}

pub(super) fn spawned_replacement(
    core: &mut Core,
    id: u32,
    slot: usize,
    pid: u32,
    now: u64,
) -> Vec<Action> {
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Replace,
            apps: vec![Spawned {
                id,
                slot,
                pid: Ok(pid),
            }],
        },
        now,
    )
}

pub(super) fn exited(core: &mut Core, pid: u32, now: u64) -> Vec<Action> {
    core.handle(
        Event::Exited {
            pid,
            code: Some(0),
            signal: None,
            oom: None,
        },
        now,
    )
}

#[test]
fn rolling_reload_replaces_one_slot_at_a_time() {
    let (mut core, _) = started(2);
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        1000,
    );
    assert!(has_log(&a, "[master] reload workers..."));
    assert!(sends(&a)
        .iter()
        .any(|(t, m)| *t == Target::Parent && m.contains("reload-start")));
    // Slot 0 first: the replacement is spawned, the old worker keeps serving.
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Replace,
        apps: vec![(3, 0)],
    }));
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::After(_, Timer::ReloadTimeout(_)))));
    // A second reload meanwhile is queued once.
    let q = core.handle(Event::Reload(ReloadReason::Signal), 1001);
    assert!(has_log(&q, "queued"));
    assert!(core
        .handle(Event::Reload(ReloadReason::Signal), 1002)
        .is_empty());

    spawned_replacement(&mut core, 3, 0, 30, 1003);
    let a = core.handle(listening(30, 7001), 1100);
    // Its start counts from its own spawn, not from the first batch's.
    assert!(has_log(
        &a,
        "[master] app_worker#3:30 started at 7001, remain 0 (97ms)"
    ));
    // It serves: it alone gets egg-ready, and its predecessor retires (drained by SIGTERM).
    assert!(sends(&a).contains(&(
        Target::Child(30),
        r#"{"action":"egg-ready","to":"app","data":{"workers":2},"from":"master"}"#.into()
    )));
    assert!(a.contains(&Action::Terminate {
        pid: 20,
        limit: Duration::from_secs(5)
    }));
    assert!(sends(&a).contains(&(
        Target::Child(AGENT),
        r#"{"action":"egg-pids","to":"agent","data":[21,30],"from":"master"}"#.into()
    )));
    // The next slot boots while the old worker drains (a surge of 1: one boot at a time).
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Replace,
        apps: vec![(4, 1)],
    }));
    // Its channel closes: egg-cluster's disconnect lines, no refork, no second terminate.
    let a = core.handle(
        Event::ChannelClosed {
            pid: 20,
            reason: None,
        },
        1200,
    );
    assert!(has_log(
        &a,
        "don't fork, because worker:20 will be kill soon"
    ));
    // The master let it go, as egg-cluster's `worker.disconnect()` does: suicide.
    assert!(has_log(
        &a,
        "[master] app_worker#1:20 disconnect, suicide: true"
    ));
    assert!(has_log(
        &a,
        "worker:20 disconnect (exitedAfterDisconnect: true"
    ));
    assert!(!a.iter().any(|x| matches!(
        x,
        Action::SpawnApps {
            batch: Batch::Refork,
            ..
        } | Action::Terminate { .. }
    )));
    // It exits: no refork, no second spawn for the next slot.
    let a = exited(&mut core, 20, 1300);
    assert!(has_log(
        &a,
        "[master] app_worker#1:20 retired (code: 0, signal: null)"
    ));
    assert!(!a.iter().any(|x| matches!(x, Action::LogError(..))));
    assert!(!sends(&a).iter().any(|(_, m)| m.contains("app-worker-died")));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    spawned_replacement(&mut core, 4, 1, 31, 1301);
    core.handle(listening(31, 7001), 1400);
    let a = exited(&mut core, 21, 1500);
    assert!(has_log(
        &a,
        "rolling reload (reload-worker) done: 2 app worker(s) replaced (500ms)"
    ));
    let done = sends(&a)
        .into_iter()
        .find(|(t, m)| *t == Target::Parent && m.contains("reload-done"))
        .unwrap();
    assert!(
        done.1.contains(r#""ok":true"#) && done.1.contains("[[20,30],[21,31]]"),
        "{}",
        done.1
    );
    assert!(a.iter().any(|x| matches!(x, Action::EmitMaster(_))));
    // The queued reload runs now.
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Replace,
        apps: vec![(5, 0)],
    }));
}

#[test]
fn a_replacement_that_fails_stops_the_reload_and_the_old_worker_serves_on() {
    let (mut core, _) = started(2);
    core.handle(Event::Reload(ReloadReason::Signal), 1000);
    spawned_replacement(&mut core, 3, 0, 30, 1001);
    let a = core.handle(
        Event::Exited {
            pid: 30,
            code: Some(1),
            signal: None,
            oom: None,
        },
        1100,
    );
    assert!(has_log(&a, "rolling reload (SIGUSR2) failed: the new app_worker#3:30 exited before it listened (code: 1, signal: null); the old app workers keep serving"));
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::SpawnApps { .. } | Action::Exit(_))));
    assert!(sends(&a)
        .iter()
        .any(|(t, m)| *t == Target::Parent && m.contains(r#""ok":false"#)));
    assert_eq!(core.routes.apps, vec![20, 21]);
    // A replacement that never listens: the start timeout stops the reload and takes it down.
    let a = core.handle(Event::Reload(ReloadReason::Api), 2000);
    let seq = a
        .iter()
        .find_map(|x| match x {
            Action::After(_, Timer::ReloadTimeout(seq)) => Some(*seq),
            _ => None,
        })
        .unwrap();
    spawned_replacement(&mut core, 4, 0, 40, 2001);
    let a = core.handle(Event::Timer(Timer::ReloadTimeout(seq)), 62_000);
    assert!(has_log(&a, "app_worker#4:40 did not listen within 60000ms"));
    assert!(a.contains(&Action::Terminate {
        pid: 40,
        limit: Duration::from_secs(5)
    }));
    assert!(has_log(&exited(&mut core, 40, 62_100), "retired"));
}

#[test]
fn an_old_worker_that_dies_during_its_replacement_is_not_reforked() {
    let (mut core, _) = started(1);
    core.handle(Event::Reload(ReloadReason::Api), 1000);
    spawned_replacement(&mut core, 2, 0, 30, 1001);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        1050,
    );
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    let a = core.handle(listening(30, 7001), 1100);
    assert!(has_log(&a, "done: 1 app worker(s) replaced"));
}

#[test]
fn memory_over_the_limit_replaces_that_worker() {
    let mut c = cfg(2);
    c.max_memory = Some(100);
    c.memory_check_interval = Some(Duration::from_secs(30));
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    let a = core.handle(listening(21, 7001), 11);
    assert!(a.contains(&Action::After(Duration::from_secs(30), Timer::MemoryCheck)));
    let a = core.handle(Event::Timer(Timer::MemoryCheck), 100);
    assert_eq!(a, [Action::SampleMemory(vec![20, 21])]);
    let a = core.handle(Event::MemorySample(vec![(20, 50), (21, 150)]), 101);
    assert!(has_log(&a, "app_worker#2:21 uses 0 MiB of memory (RSS 150 bytes), over maxMemoryRestart 0 MiB (100 bytes): replacing it"));
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Replace,
        apps: vec![(3, 1)],
    }));
    assert!(a.contains(&Action::After(Duration::from_secs(30), Timer::MemoryCheck)));
}

#[test]
fn scaling_spawns_into_new_slots_and_drains_from_the_top() {
    let (mut core, _) = started(2);
    let a = core.handle(Event::Scale(Scale::By(1)), 1000);
    assert!(has_log(&a, "[master] scale app workers from 2 to 3"));
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Scale,
        apps: vec![(3, 2)],
    }));
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Scale,
            apps: vec![Spawned {
                id: 3,
                slot: 2,
                pid: Ok(22),
            }],
        },
        1001,
    );
    let a = core.handle(listening(22, 7001), 1100);
    assert!(sends(&a)
        .iter()
        .any(|(t, m)| *t == Target::Child(22) && m.contains("egg-ready")));
    let a = core.handle(Event::Scale(Scale::To(1)), 2000);
    assert!(a.contains(&Action::Terminate {
        pid: 21,
        limit: Duration::from_secs(5)
    }));
    assert!(a.contains(&Action::Terminate {
        pid: 22,
        limit: Duration::from_secs(5)
    }));
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::Terminate { pid: 20, .. })));
    let a = exited(&mut core, 22, 2100);
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    // Never below one worker.
    assert!(core.handle(Event::Scale(Scale::By(-5)), 3000).is_empty());
}

#[test]
fn reload_before_ready_is_refused() {
    let mut core = released(cfg(1));
    let a = core.handle(Event::Reload(ReloadReason::Signal), 1);
    assert!(has_log(&a, "reload (SIGUSR2) ignored: the app is not up"));
}

#[test]
fn a_debugged_master_closes_when_an_app_worker_is_sigkilled() {
    let mut c = cfg(2);
    c.is_debug = true;
    let (mut core, _) = started_with(c);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        200,
    );
    assert!(a.contains(&Action::Log(
        Level::Error,
        "[master] app_worker#1:20 died (code: null, signal: SIGKILL, suicide: false, state: dead), current workers: [20,21]".into()
    )));
    assert!(a.contains(&Action::Log(
        Level::Error,
        "[master] worker kill by debugger, exiting...".into()
    )));
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::LogError("AppWorkerDiedError", _))));
    // No replacement: the master closes, the surviving worker first.
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    assert!(a.contains(&Action::TerminateGroup {
        group: Group::Apps,
        pids: vec![21],
        limit: Duration::from_secs(5),
    }));
    assert!(has_log(
        &a,
        "[master] send kill SIGTERM to app workers, will exit with code:0 after 5000ms"
    ));
    let a = core.handle(Event::Terminated(Group::Apps), 300);
    assert!(a.iter().any(|x| matches!(x, Action::TerminateGroup { group: Group::Agent, pids, .. } if pids == &vec![AGENT])));
    assert_eq!(
        core.handle(Event::Terminated(Group::Agent), 400).last(),
        Some(&Action::FindOrphans { at_close: true })
    );

    // Any other death of a debugged master's worker is an ordinary one.
    let mut c = cfg(2);
    c.is_debug = true;
    let (mut core, _) = started_with(c);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(1),
            signal: None,
            oom: None,
        },
        200,
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::LogError("AppWorkerDiedError", _))));
    assert!(!a.iter().any(|x| matches!(x, Action::TerminateGroup { .. })));
    // And a SIGKILL without a debugger is too.
    let (mut core, _) = started(2);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: None,
            signal: Some("SIGKILL"),
            oom: None,
        },
        200,
    );
    assert!(!has_log(&a, "worker kill by debugger"));
    assert!(!a.iter().any(|x| matches!(x, Action::TerminateGroup { .. })));
}
mod close;
mod dev_reload;
mod egg4;
mod host_faults;
mod hung;
mod orphans;
mod scale;
mod surge;
mod threads;
mod upgrade;

/// egg-cluster logs `reload workers...` at DEBUG in the local env, where egg-development's
/// reloads happen: ours is INFO, so a dev reload shows.
#[test]
fn a_dev_reload_says_so_at_info_in_the_local_env() {
    let mut c = cfg(1);
    c.is_production = false;
    c.verbose = Level::Debug;
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        1000,
    );
    assert!(
        a.contains(&Action::Log(
            Level::Info,
            "[master] reload workers...".into()
        )),
        "{a:?}"
    );
}

/// A dev reload whose replacement fails at boot: the worker's report names the file and the
/// error in a block (local env), and the next reload that succeeds says it recovered.
#[test]
fn a_failed_dev_reload_is_loud_and_its_recovery_said() {
    let mut c = cfg(1);
    c.is_production = false;
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        1000,
    );
    spawned_replacement(&mut core, 2, 0, 30, 1001);
    let report =
        r#"{"error":"SyntaxError: Unexpected token ';'","file":"/app/controller/home.js:7"}"#;
    let a = core.handle(
        to_master(Role::App, 30, MasterAction::BootError, Some(report)),
        1100,
    );
    assert!(a.is_empty(), "{a:?}");
    let a = core.handle(
        Event::Exited {
            pid: 30,
            code: Some(1),
            signal: None,
            oom: None,
        },
        1200,
    );
    assert!(
        a.contains(&Action::Log(
            Level::Error,
            "[master] ==================== reload failed ====================\n\
         The app workers still run the code from before the change.\n  \
         file:  /app/controller/home.js:7\n  \
         error: SyntaxError: Unexpected token ';'\n\
         Fix it and save: the next change reloads the workers again.\n\
         ==========================================================="
                .into()
        )),
        "{a:?}"
    );
    assert!(has_log(&a, "[master] rolling reload (reload-worker) failed: the new app_worker#2:30 exited before it listened (code: 1, signal: null): SyntaxError: Unexpected token ';' (/app/controller/home.js:7); the old app workers keep serving"));

    // A report without an error is dropped as malformed.
    let a = core.handle(
        to_master(Role::App, 20, MasterAction::BootError, Some("{}")),
        1300,
    );
    assert!(has_log(
        &a,
        "dropped a malformed message from app_worker#1:20"
    ));

    core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        2000,
    );
    spawned_replacement(&mut core, 3, 0, 40, 2001);
    core.handle(listening(40, 7001), 2100);
    let a = exited(&mut core, 20, 2200);
    assert!(has_log(&a, "[master] reload recovered: the app workers run the current code again (the previous reload failed: the new app_worker#2:30 exited"), "{a:?}");
}
