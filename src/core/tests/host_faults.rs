//! The host's faults as the core sees them: a worker the OOM killer took is named so, then dies
//! as any worker does; spawns failing for want of a resource after the start are said once
//! per streak and once at its end, the agent's and a scale-up's included, each retried after
//! the same growing delay.

use std::time::Duration;

use super::scale::{outcome, progress};
use super::*;

fn refork_spawns(actions: &[Action]) -> Vec<(u32, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Refork,
                apps,
            } => Some(apps[0]),
            _ => None,
        })
        .collect()
}

fn killed(pid: u32, oom: Option<OomKill>) -> Event {
    Event::Exited {
        pid,
        code: None,
        signal: Some("SIGKILL"),
        oom,
    }
}

fn emfile() -> SpawnError {
    SpawnError::Resource("Too many open files (os error 24)".into())
}

fn timers(actions: &[Action], timer: fn(&Timer) -> bool) -> Vec<u128> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::After(d, t) if timer(t) => Some(d.as_millis()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_oom_killers_victim_is_named_then_dies_and_is_reforked_as_any_worker() {
    let (mut core, _) = started(2);
    let cgroup = "/sys/fs/cgroup/memory/app/workers";
    let a = core.handle(
        killed(
            app_pid(0),
            Some(OomKill {
                cgroup: Some(cgroup.into()),
                limit: Some(64 << 20),
            }),
        ),
        1000,
    );
    let oom = Action::LogError(
        "WorkerOutOfMemoryError",
        format!("[master] app_worker#1:20 killed by the kernel's OOM killer (cgroup memory limit 64 MiB; its OOM kills counted in {cgroup})"),
    );
    let died = a
        .iter()
        .position(|x| matches!(x, Action::LogError("AppWorkerDiedError", m) if m.starts_with("[master] app_worker#1:20 died (code: null, signal: SIGKILL")))
        .expect("the died line");
    assert!(
        a.iter().position(|x| *x == oom).is_some_and(|i| i < died),
        "{a:?}"
    );
    assert_eq!(refork_spawns(&a), [(3, 0)]);

    // the agent, the host's counter only, a limit that is no whole MiB
    let a = core.handle(
        killed(
            AGENT,
            Some(OomKill {
                cgroup: None,
                limit: None,
            }),
        ),
        2000,
    );
    assert!(a.contains(&Action::LogError(
        "WorkerOutOfMemoryError",
        "[master] agent_worker#1:10 killed by the kernel's OOM killer (the host out of memory: /proc/vmstat's oom_kill moved)".into()
    )));
    assert!(a.contains(&Action::After(Duration::from_secs(1), Timer::ReforkAgent)));
    let a = core.handle(
        killed(
            app_pid(1),
            Some(OomKill {
                cgroup: Some(cgroup.into()),
                limit: Some(1000),
            }),
        ),
        3000,
    );
    assert!(logs(&a)
        .iter()
        .any(|l| l.contains("(cgroup memory limit 1000 bytes; its")));

    // a plain SIGKILL says nothing of the kind; an unknown pid nothing at all
    let (mut core, _) = started(2);
    let a = core.handle(killed(app_pid(0), None), 1000);
    assert!(!format!("{a:?}").contains("OOM"));
    let a = core.handle(
        killed(
            999,
            Some(OomKill {
                cgroup: None,
                limit: None,
            }),
        ),
        1000,
    );
    assert!(a.is_empty(), "{a:?}");
}

#[test]
fn a_failing_agent_spawn_backs_off_and_its_streak_is_said_once_each_way() {
    let (mut core, _) = started(1);
    core.handle(killed(AGENT, None), 1000);
    let a = core.handle(Event::Timer(Timer::ReforkAgent), 2000);
    assert!(has_log(&a, "[master] new agent_worker starting..."));
    let mut id = 2;
    let mut lines = Vec::new();
    let mut delays = Vec::new();
    for n in 0..8u64 {
        let a = core.handle(
            Event::AgentSpawned {
                id,
                pid: Err(emfile()),
            },
            2001 + n * 10,
        );
        lines.extend(logs(&a));
        delays.extend(timers(&a, |t| *t == Timer::ReforkAgent));
        assert!(!a.contains(&Action::Exit(1)));
        let a = core.handle(Event::Timer(Timer::ReforkAgent), 2005 + n * 10);
        // the retry is not announced each time
        assert!(logs(&a).is_empty(), "{a:?}");
        id += 1;
        assert!(a.contains(&Action::SpawnAgent { id }));
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert_eq!(lines, ["[master] cannot spawn agent_worker#2: Too many open files (os error 24): the master is short of a resource, not a crash of the app; trying again in 100ms, then less often (up to every 5s), said again once spawning works"]);
    let a = core.handle(Event::AgentSpawned { id, pid: Ok(77) }, 2500);
    assert_eq!(
        logs(&a),
        [
            "[master] spawning works again after 8 failed attempts in 499ms",
            "[master] agent_worker#10:77 start with clusterPort:4000"
        ]
    );

    // a failure that is no shortage (the node binary gone) is said every time, backed off too
    core.handle(killed(77, None), 3000);
    core.handle(Event::Timer(Timer::ReforkAgent), 4000);
    for (n, delay) in [(0, 100), (1, 200)] {
        let a = core.handle(
            Event::AgentSpawned {
                id: 11 + n,
                pid: Err("No such file or directory (os error 2)".into()),
            },
            4001 + u64::from(n),
        );
        assert_eq!(
            logs(&a),
            [format!("[master] failed to spawn agent_worker#{}: No such file or directory (os error 2); trying again in {delay}ms", 11 + n)]
        );
        assert_eq!(timers(&a, |t| *t == Timer::ReforkAgent), [delay]);
    }
}

#[test]
fn a_scale_up_short_of_a_resource_retries_within_its_boot_timeout() {
    let (mut core, _) = started_with(Config {
        reload_concurrency: 1,
        ..cfg(1)
    });
    let a = core.handle(
        Event::Control {
            waiter: 5,
            request: ControlRequest::Scale(Scale::By(1)),
        },
        1000,
    );
    let apps = match a.iter().find(|x| matches!(x, Action::SpawnApps { .. })) {
        Some(Action::SpawnApps { apps, .. }) => apps.clone(),
        _ => panic!("{a:?}"),
    };
    assert_eq!(apps, [(2, 1)]);
    let fail = |core: &mut Core, id, now| {
        core.handle(
            Event::AppsSpawned {
                batch: Batch::Scale,
                apps: vec![Spawned {
                    id,
                    slot: 1,
                    pid: Err(emfile()),
                }],
            },
            now,
        )
    };
    let a = fail(&mut core, 2, 1001);
    assert_eq!(outcome(&a), None, "the scaling goes on");
    assert!(has_log(&a, "[master] cannot spawn app_worker#2: Too many open files (os error 24): the master is short of a resource"));
    assert_eq!(
        progress(&a),
        [(
            vec![5],
            "cannot spawn app_worker#2: Too many open files (os error 24) (the master is short of a resource); trying again".into()
        )]
    );
    let seq = match a.iter().find_map(|x| match x {
        Action::After(d, Timer::ScaleRetry(seq)) => Some((*d, *seq)),
        _ => None,
    }) {
        Some((d, seq)) => {
            assert_eq!(d, Duration::from_millis(100));
            seq
        }
        None => panic!("{a:?}"),
    };
    // the next try, under a new id, in the same slot; failing again says nothing new
    let a = core.handle(Event::Timer(Timer::ScaleRetry(seq)), 1101);
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Scale,
        apps: vec![(3, 1)]
    }));
    let a = fail(&mut core, 3, 1102);
    assert!(logs(&a).is_empty() && progress(&a).is_empty(), "{a:?}");
    assert!(a.contains(&Action::After(
        Duration::from_millis(200),
        Timer::ScaleRetry(seq)
    )));
    // the fds are back: it boots, serves, and the scaling is done
    let a = core.handle(Event::Timer(Timer::ScaleRetry(seq)), 1302);
    assert!(a.contains(&Action::SpawnApps {
        batch: Batch::Scale,
        apps: vec![(4, 1)]
    }));
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Scale,
            apps: vec![Spawned {
                id: 4,
                slot: 1,
                pid: Ok(40),
            }],
        },
        1400,
    );
    assert!(has_log(
        &a,
        "[master] spawning works again after 2 failed attempts in 399ms"
    ));
    let a = core.handle(listening(40, 7001), 1500);
    assert!(
        matches!(outcome(&a), Some((w, Ok(_))) if w == vec![5]),
        "{a:?}"
    );
    assert_eq!(core.status().master.serving, 2);

    // one that cannot be spawned within the boot timeout fails the scaling, saying why
    let a = core.handle(
        Event::Control {
            waiter: 6,
            request: ControlRequest::Scale(Scale::By(1)),
        },
        2000,
    );
    let seq = a
        .iter()
        .find_map(|x| match x {
            Action::After(_, Timer::ScaleTimeout(seq)) => Some(*seq),
            _ => None,
        })
        .unwrap();
    fail(&mut core, 5, 2001);
    let a = core.handle(Event::Timer(Timer::ScaleTimeout(seq)), 62_000);
    assert!(
        matches!(outcome(&a), Some((w, Err(e))) if w == vec![6] && e == "app_worker#5 could not be spawned within 60000ms: Too many open files (os error 24)"),
        "{a:?}"
    );
    // its pending retry is then nothing
    let a = core.handle(Event::Timer(Timer::ScaleRetry(seq)), 62_100);
    assert!(
        !a.iter().any(|x| matches!(x, Action::SpawnApps { .. })),
        "{a:?}"
    );
}
