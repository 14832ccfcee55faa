//! The egg 4 dialect (@eggjs/cluster 3's protocol and lines), decision by decision.

use super::*;

fn cfg4(workers: usize) -> Config {
    Config {
        dialect: Dialect::Egg4,
        ..cfg(workers)
    }
}

fn app_start(pid: u32, address: Value) -> Event {
    let data = json!({"address": address, "workerId": pid}).to_string();
    to_master(Role::App, pid, MasterAction::AppStart, Some(&data))
}

/// An egg 4 cluster with every worker counted through `app-start`.
fn started4(workers: usize) -> (Core, Vec<Action>) {
    let mut core = released(cfg4(workers));
    let mut last = Vec::new();
    for i in 0..workers {
        core.handle(Event::Online { pid: app_pid(i) }, 50);
        // The cluster protocol's `listening` comes first and does not count in egg 4.
        let a = core.handle(listening(app_pid(i), 7001), 90);
        assert!(a.is_empty(), "{a:?}");
        last = core.handle(app_start(app_pid(i), addr(7001)), 100);
    }
    (core, last)
}

#[test]
fn the_start_line_has_the_eggs() {
    let mut core = Core::new(cfg4(1), 0);
    let a = core.handle(Event::Start, 0);
    assert!(has_log(
        &a,
        "[master] =================== egg start 🥚🥚🥚🥚 ====================="
    ));
}

#[test]
fn app_start_counts_and_the_worker_gets_egg_pids_by_worker_id() {
    let (core, last) = started4(2);
    assert!(core.started());
    let s = sends(&last);
    assert!(s.contains(&(
        Target::Child(21),
        r#"{"action":"egg-pids","to":"app","data":[10],"from":"master","receiverWorkerId":"21","receiverPid":"21"}"#.into()
    )), "{s:?}");
    assert!(s.contains(&(
        Target::Child(AGENT),
        r#"{"action":"egg-pids","to":"agent","data":[20,21],"from":"master"}"#.into()
    )));
    assert!(has_log(
        &last,
        "[master] egg started on http://127.0.0.1:7001 (100ms)"
    ));
}

#[test]
fn egg3_ignores_app_start_and_egg4_the_cluster_listening() {
    // egg 3: `app-start` is an ordinary message for promise.master.
    let mut core = released(cfg(1));
    let a = core.handle(app_start(app_pid(0), addr(7001)), 100);
    assert_eq!(a, vec![Action::EmitMaster(b"{}".to_vec())]);
    assert!(!core.started());
    let a = core.handle(listening(app_pid(0), 7001), 100);
    assert!(a.iter().any(|x| matches!(x, Action::Ready(_))));

    let mut core = released(cfg4(1));
    assert!(core.handle(listening(app_pid(0), 7001), 100).is_empty());
    assert!(!core.started());
}

#[test]
fn any_ipv6_is_printed_as_the_default_host_and_a_unix_socket_as_its_path() {
    let mut core = released(cfg4(1));
    let a = core.handle(
        app_start(
            app_pid(0),
            json!({"address": "::", "family": "IPv6", "port": 7001}),
        ),
        100,
    );
    assert!(has_log(
        &a,
        "[master] egg started on http://127.0.0.1:7001 ("
    ));

    let mut core = released(cfg4(1));
    let a = core.handle(
        app_start(
            app_pid(0),
            json!({"address": "/tmp/egg.sock", "addressType": -1}),
        ),
        100,
    );
    assert!(
        has_log(&a, "[master] egg started on /tmp/egg.sock ("),
        "{a:?}"
    );

    // egg 3 prints what the worker listens on.
    assert_eq!(
        get_address_in(Dialect::Egg3, Some("::"), Some(1), "http", None),
        "http://:::1"
    );
    assert_eq!(
        get_address_in(Dialect::Egg4, Some("::"), Some(1), "http", Some("h")),
        "http://h:1"
    );
}

#[test]
fn debug_port_and_reload_lines() {
    let mut c = cfg4(1);
    c.debug_port = Some(9000);
    let mut core = released(c);
    let a = core.handle(app_start(app_pid(0), addr(7001)), 100);
    assert!(has_log(
        &a,
        "[master] egg started debug port on http://127.0.0.1:9000"
    ));
    let a = core.handle(Event::Reload(ReloadReason::Message), 200);
    assert!(
        has_log(&a, "[master] reload 1 workers..."),
        "{:?}",
        logs(&a)
    );
}

/// @eggjs/cluster 3 forks with cfork 2, whose lines add the slave fields and `reforkCount`.
#[test]
fn cfork_2_lines() {
    let mut c = cfg4(1);
    c.is_production = false;
    let mut core = released(c);
    core.handle(listening(20, 7001), 10);
    core.handle(app_start(20, addr(7001)), 10);
    let a = core.handle(
        Event::Exited {
            pid: 20,
            code: Some(1),
            signal: None,
            oom: None,
        },
        20,
    );
    let cfork: Vec<&str> = a
        .iter()
        .filter_map(|x| match x {
            Action::Cfork(_, m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        cfork,
        [
            "worker:20 exit (code: 1, exitedAfterDisconnect: false, state: dead, isDead: true, isExpected: false, worker.disableRefork: false, isSlave: false, slaveIndex: )",
            "don't fork new work (refork: false, reforkCount: 0)",
            "(total 0 disconnect, 1 unexpected exit) WorkerDiedUnexpectedError: worker:20 died unexpected (code: 1, signal: null, exitedAfterDisconnect: false, state: dead, isSalve: false, salveIndex: )",
        ]
    );

    // In prod: the disconnect decides the refork; the replacement's line counts the reforks.
    let (mut core, _) = started4(2);
    let a = core.handle(
        Event::ChannelClosed {
            pid: 20,
            reason: None,
        },
        200,
    );
    assert!(a.contains(&Action::Cfork(
        true,
        "worker:20 disconnect (exitedAfterDisconnect: false, state: disconnected, isDead: false, worker.disableRefork: false, isSlave: false, slaveIndex: )".into()
    )), "{a:?}");
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
    assert!(
        a.contains(&Action::Cfork(
            true,
            "new worker:30 fork (state: none, reforkCount: 1)".into()
        )),
        "{a:?}"
    );
}

/// The start lines say which egg runs, where it was found and which protocol was chosen: after
/// the framework's own line (here this package), or in it when the framework is egg.
#[test]
fn the_start_lines_name_the_apps_egg_and_the_dialect() {
    let start_lines = |cfg: Config| {
        let mut core = Core::new(cfg, 0);
        let l = logs(&core.handle(Event::Start, 0));
        l[2..4].to_vec()
    };
    let egg = |version: &str, wraps: Option<(&str, &str)>, cluster| Egg {
        dir: "/app/node_modules/egg".into(),
        version: version.into(),
        wraps: wraps.map(|(d, v)| (d.into(), v.into())),
        cluster,
        needs_node: Vec::new(),
    };
    let ours = |egg: Option<Egg>, dialect| Config {
        framework_name: "egg-cluster-rs".into(),
        framework_version: "0.1.0".into(),
        dialect,
        egg,
        ..cfg(1)
    };
    assert_eq!(
        start_lines(ours(
            Some(egg("4.1.2-beta.9", None, Some("@eggjs/cluster"))),
            Dialect::Egg4
        )),
        [
            "[master] egg-cluster-rs version 0.1.0",
            "[master] egg version 4.1.2-beta.9 from /app/node_modules/egg: egg 4 dialect (@eggjs/cluster's protocol)",
        ]
    );
    let wrapper = egg(
        "9.9.9",
        Some(("/app/node_modules/egg/node_modules/egg", "3.34.0")),
        Some("egg-cluster"),
    );
    assert_eq!(
        start_lines(ours(Some(wrapper), Dialect::Egg3))[1],
        "[master] egg version 9.9.9 from /app/node_modules/egg, a wrapper of egg 3.34.0 from /app/node_modules/egg/node_modules/egg: egg 3 dialect (egg-cluster's protocol)"
    );
    assert_eq!(
        start_lines(ours(Some(egg("5.0.0", None, None)), Dialect::Egg4))[1],
        "[master] egg version 5.0.0 from /app/node_modules/egg: egg 4 dialect (@eggjs/cluster's protocol), by its version: it depends on neither egg-cluster nor @eggjs/cluster"
    );
    assert_eq!(
        start_lines(ours(None, Dialect::Egg3)),
        [
            "[master] egg-cluster-rs version 0.1.0",
            "[master] egg not found from the framework or the app: egg 3 dialect (egg-cluster's protocol)",
        ]
    );
    // egg as the framework: one line, egg-cluster's with the rest after it
    let own = Config {
        framework_version: "4.0.10".into(),
        egg: Some(egg("4.0.10", None, Some("@eggjs/cluster"))),
        ..cfg4(1)
    };
    let l = start_lines(own);
    assert_eq!(
        l[0],
        "[master] egg version 4.0.10 from /app/node_modules/egg: egg 4 dialect (@eggjs/cluster's protocol)"
    );
    assert!(l[1].starts_with("[master] start with options:"), "{l:?}");
}
