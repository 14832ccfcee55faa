//! Spawns failing after the start (the master out of fds, processes, memory): said once per
//! streak, retried after a growing delay, not counted as deaths; the recovery is said.

use std::time::Duration;

use super::*;

fn refork_spawns(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Refork,
                apps,
            } => Some(apps[0].0),
            _ => None,
        })
        .collect()
}

fn failed(id: u32) -> Event {
    Event::AppsSpawned {
        batch: Batch::Refork,
        apps: vec![Spawned {
            id,
            slot: 0,
            pid: Err("Too many open files (os error 24)".into()),
        }],
    }
}

#[test]
fn a_failing_app_spawn_is_said_once_and_retried_with_a_growing_delay_until_it_works() {
    let (mut core, _) = started(2);
    let a = core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: None,
            signal: Some("SIGKILL"),
        },
        1000,
    );
    let mut id = refork_spawns(&a)[0];
    let mut lines = Vec::new();
    let mut delays = Vec::new();
    for n in 0..9u64 {
        let a = core.handle(failed(id), 1000 + n);
        lines.extend(logs(&a));
        delays.extend(a.iter().filter_map(|x| match x {
            Action::After(d, Timer::ReforkApp) => Some(d.as_millis()),
            _ => None,
        }));
        // no crash-loop backoff: the deaths counted are none of these
        assert!(!a.iter().any(|x| matches!(x, Action::Cfork(..))), "{a:?}");
        let a = core.handle(Event::Timer(Timer::ReforkApp), 1100 + n);
        id = refork_spawns(&a)[0];
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    assert_eq!(
        lines,
        [
            "[master] failed to spawn app_worker#3: Too many open files (os error 24); retrying every 5s at most, not logged again until a spawn succeeds",
            "[master] dead app workers are not replaced now: cannot spawn app workers: Too many open files (os error 24); 1 of 2 app workers serving",
        ]
    );
    let st = core.status().master;
    assert_eq!(
        st.refork_held.as_deref(),
        Some("cannot spawn app workers: Too many open files (os error 24)")
    );
    assert!(!st.healthy);
    // the fds are back
    let a = core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id,
                slot: 0,
                pid: Ok(99),
            }],
        },
        5000,
    );
    assert!(has_log(
        &a,
        "[master] spawning works again, after 9 failed attempts in 4000ms"
    ));
    core.handle(Event::Online { pid: 99 }, 5100);
    core.handle(listening(99, 7001), 5200);
    let st = core.status().master;
    assert_eq!(
        st.reforks, 1,
        "one refork done, the failed attempts not counted"
    );
    assert!(st.healthy && st.refork_held.is_none());
}

#[test]
fn a_failing_agent_spawn_is_said_once_and_retried() {
    let (mut core, _) = started(1);
    let a = core.handle(
        Event::Exited {
            pid: AGENT,
            code: None,
            signal: Some("SIGKILL"),
        },
        1000,
    );
    assert!(a.contains(&Action::After(Duration::from_secs(1), Timer::ReforkAgent)));
    let a = core.handle(Event::Timer(Timer::ReforkAgent), 2000);
    assert!(has_log(&a, "[master] new agent_worker starting..."));
    let fail = |id| Event::AgentSpawned {
        id,
        pid: Err("Resource temporarily unavailable (os error 11)".into()),
    };
    let a = core.handle(fail(2), 2001);
    assert!(has_log(&a, "[master] failed to spawn agent_worker#2: Resource temporarily unavailable (os error 11); retrying every 5s at most"));
    assert!(a.contains(&Action::After(
        Duration::from_millis(100),
        Timer::ReforkAgent
    )));
    assert!(!a.contains(&Action::Exit(1)));
    let a = core.handle(Event::Timer(Timer::ReforkAgent), 2101);
    assert!(logs(&a).is_empty(), "{a:?}");
    let a = core.handle(fail(3), 2102);
    assert!(logs(&a).is_empty(), "{a:?}");
    assert!(a.contains(&Action::After(
        Duration::from_millis(200),
        Timer::ReforkAgent
    )));
    core.handle(Event::Timer(Timer::ReforkAgent), 2302);
    let a = core.handle(Event::AgentSpawned { id: 4, pid: Ok(77) }, 2400);
    assert!(has_log(
        &a,
        "[master] spawning works again, after 2 failed attempts in 399ms"
    ));
}
