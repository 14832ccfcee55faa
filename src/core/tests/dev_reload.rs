//! The local env's reload (every replacement at once, the old code gone at the first new
//! worker's serve), the waiting client's progress and outcome, a reload queued behind one
//! that fails.

use super::scale::{outcome, progress};
use super::surge::spawned_slots as replace_spawns;
use super::*;

fn local(workers: usize) -> Config {
    Config {
        is_production: false,
        verbose: Level::Debug,
        env: Some("local".into()),
        reload_concurrency: 1,
        ..cfg(workers)
    }
}

fn terminated(actions: &[Action]) -> Vec<u32> {
    let mut pids: Vec<u32> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn a_dev_reload_boots_every_replacement_and_retires_the_old_code_at_the_first_serve() {
    let (mut core, _) = started_with(local(4));
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        1000,
    );
    // reloadConcurrency is 1, and still all four boot at once.
    assert_eq!(replace_spawns(&a), vec![(5, 0), (6, 1), (7, 2), (8, 3)]);
    assert!(has_log(
        &a,
        "replacing 4 app worker(s), all at once; the old ones retire as soon as one new worker serves (local env)"
    ));
    for (i, (id, slot)) in [(5, 0), (6, 1), (7, 2), (8, 3)].into_iter().enumerate() {
        spawned_replacement(&mut core, id, slot, 30 + i as u32, 1001);
    }
    // Slot 2's replacement serves first: every old worker retires now.
    let a = core.handle(listening(32, 7001), 2000);
    assert_eq!(terminated(&a), vec![20, 21, 22, 23]);
    let pids = sends(&a)
        .into_iter()
        .rfind(|(t, m)| *t == Target::Child(AGENT) && m.contains("egg-pids"))
        .expect("egg-pids")
        .1;
    assert!(
        pids.contains("[32]"),
        "the agent sees only the new worker: {pids}"
    );
    // The old ones drain and go; the other replacements take their slots as they serve.
    for (pid, now) in [(20, 2100), (21, 2110), (22, 2120), (23, 2130)] {
        let a = exited(&mut core, pid, now);
        assert!(replace_spawns(&a).is_empty());
        assert!(terminated(&a).is_empty());
    }
    core.handle(listening(30, 7001), 2200);
    core.handle(listening(31, 7001), 2300);
    let a = core.handle(listening(33, 7001), 2400);
    assert!(has_log(
        &a,
        "rolling reload (reload-worker) done: 4 app worker(s) replaced (1400ms)"
    ));
}

#[test]
fn a_dev_reload_whose_later_boot_fails_keeps_the_new_workers() {
    let (mut core, _) = started_with(local(3));
    let a = core.handle(Event::Reload(ReloadReason::Signal), 1000);
    assert_eq!(replace_spawns(&a).len(), 3);
    for (i, slot) in [0, 1, 2].into_iter().enumerate() {
        spawned_replacement(&mut core, 4 + i as u32, slot, 30 + i as u32, 1001);
    }
    core.handle(listening(30, 7001), 2000);
    // Slot 1's replacement dies: the others boot on (their old workers are gone already).
    let a = exited(&mut core, 31, 2100);
    assert!(has_log(
        &a,
        "failed: the new app_worker#5:31 exited before it listened (code: 0, signal: null); the new app workers serve, and those still booting take their slots when they do"
    ));
    assert!(!terminated(&a).contains(&32));
    // egg-ready and the slot: slot 2's replacement still joins.
    let a = core.handle(listening(32, 7001), 2200);
    assert!(sends(&a)
        .iter()
        .any(|(t, m)| *t == Target::Child(32) && m.contains("egg-ready")));
}

#[test]
fn a_production_reload_still_rolls_slot_by_slot() {
    let (mut core, _) = started(3);
    let a = core.handle(
        to_master(Role::Agent, AGENT, MasterAction::ReloadWorker, None),
        1000,
    );
    assert_eq!(replace_spawns(&a), vec![(4, 0)]);
    spawned_replacement(&mut core, 4, 0, 30, 1001);
    let a = core.handle(listening(30, 7001), 2000);
    assert_eq!(terminated(&a), vec![20]);
}

#[test]
fn a_waiting_client_hears_each_replacement_and_the_outcome_once_all_serve() {
    let (mut core, _) = started_with(Config {
        reload_concurrency: 2,
        ..cfg(2)
    });
    let a = core.handle(
        Event::Control {
            waiter: 4,
            request: ControlRequest::Reload,
        },
        1000,
    );
    assert!(has_log(
        &a,
        "[master] rolling reload (egg-cluster-rs reload): replacing 2 app worker(s), 2 at a time"
    ));
    spawned_replacement(&mut core, 3, 0, 30, 1001);
    spawned_replacement(&mut core, 4, 1, 31, 1001);
    let a = core.handle(listening(31, 7001), 1500);
    assert_eq!(
        progress(&a),
        vec![(
            vec![4],
            "app_worker#4:31 serves in slot 1, replacing app_worker#2:21 (1/2)".into()
        )]
    );
    assert_eq!(outcome(&a), None);
    let a = core.handle(listening(30, 7001), 1800);
    assert_eq!(
        outcome(&a),
        Some((
            vec![4],
            Ok("2 app worker(s) replaced in 800ms; every new one serves".into())
        ))
    );
    // The drains end later; nobody is answered twice.
    exited(&mut core, 21, 1900);
    let a = exited(&mut core, 20, 2000);
    assert!(has_log(&a, "done: 2 app worker(s) replaced"));
    assert_eq!(outcome(&a), None);
}

#[test]
fn a_reload_queued_behind_a_failing_one_still_runs() {
    let (mut core, _) = started(2);
    core.handle(Event::Reload(ReloadReason::Message), 1000);
    spawned_replacement(&mut core, 3, 0, 30, 1001);
    // The fix is saved while the broken edit's replacement boots.
    let a = core.handle(
        Event::Control {
            waiter: 9,
            request: ControlRequest::Reload,
        },
        1100,
    );
    assert!(has_log(&a, "reload (egg-cluster-rs reload) queued"));
    let a = exited(&mut core, 30, 1200);
    assert!(has_log(&a, "rolling reload (reload-worker) failed"));
    assert!(has_log(
        &a,
        "rolling reload (egg-cluster-rs reload): replacing 2 app worker(s)"
    ));
    assert_eq!(replace_spawns(&a), vec![(4, 0)]);
    assert_eq!(outcome(&a), None);
    spawned_replacement(&mut core, 4, 0, 31, 1201);
    let a = exited(&mut core, 31, 1300);
    assert!(matches!(outcome(&a), Some((w, Err(_))) if w == vec![9]));
}
