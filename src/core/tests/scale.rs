//! Scaling through the surge, its bound, its failures, and the clients that wait on it.

use super::*;

fn scale_cfg(workers: usize, surge: usize, max: usize) -> Config {
    Config {
        reload_concurrency: surge,
        max_workers: max,
        ..cfg(workers)
    }
}

fn scale_spawns(actions: &[Action]) -> Vec<(u32, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Scale,
                apps,
            } => Some(apps.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn spawned_scale(core: &mut Core, apps: &[(u32, usize)], pid0: u32, now: u64) -> Vec<u32> {
    let spawned: Vec<Spawned> = apps
        .iter()
        .enumerate()
        .map(|(i, &(id, slot))| Spawned {
            id,
            slot,
            pid: Ok(pid0 + i as u32),
        })
        .collect();
    let pids = spawned.iter().map(|s| *s.pid.as_ref().unwrap()).collect();
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Scale,
            apps: spawned,
        },
        now,
    );
    pids
}

pub(super) fn progress(actions: &[Action]) -> Vec<(Vec<u64>, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Progress { waiters, line } => Some((waiters.clone(), line.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn outcome(actions: &[Action]) -> Option<(Vec<u64>, Result<String, String>)> {
    actions.iter().find_map(|a| match a {
        Action::Outcome { waiters, result } => Some((waiters.clone(), result.clone())),
        _ => None,
    })
}

fn control(waiter: u64, scale: Scale) -> Event {
    Event::Control {
        waiter,
        request: ControlRequest::Scale(scale),
    }
}

#[test]
fn twenty_quick_scale_ups_boot_through_the_surge_up_to_the_bound() {
    let (mut core, _) = started_with(scale_cfg(1, 2, 6));
    // Twenty SIGTTIN before anything boots: the first two boot, the count stops at the bound.
    let a = core.handle(Event::Scale(Scale::By(1)), 1000);
    assert_eq!(scale_spawns(&a), vec![(2, 1)]);
    let mut first = spawned_scale(&mut core, &[(2, 1)], 30, 1000);
    let a = core.handle(Event::Scale(Scale::By(1)), 1001);
    assert_eq!(scale_spawns(&a), vec![(3, 2)]);
    first.extend(spawned_scale(&mut core, &[(3, 2)], 31, 1001));
    let mut capped = 0;
    for i in 0..18 {
        let a = core.handle(Event::Scale(Scale::By(1)), 1002 + i);
        assert!(scale_spawns(&a).is_empty(), "boot {i} beyond the surge");
        capped += usize::from(has_log(&a, "capped at 6"));
    }
    assert_eq!(capped, 15, "every request beyond 6 says so");
    assert_eq!(core.workers, 6);
    // Each boot's end lets one more boot: never more than two at once.
    let a = core.handle(listening(first[0], 7001), 2000);
    assert_eq!(scale_spawns(&a), vec![(4, 3)]);
    spawned_scale(&mut core, &[(4, 3)], 32, 2000);
    let a = core.handle(listening(first[1], 7001), 2100);
    assert_eq!(scale_spawns(&a), vec![(5, 4)]);
    spawned_scale(&mut core, &[(5, 4)], 33, 2100);
    let a = core.handle(listening(32, 7001), 2200);
    assert_eq!(scale_spawns(&a), vec![(6, 5)]);
    spawned_scale(&mut core, &[(6, 5)], 34, 2200);
    core.handle(listening(33, 7001), 2300);
    let a = core.handle(listening(34, 7001), 2400);
    assert!(scale_spawns(&a).is_empty());
    assert!(has_log(
        &a,
        "[master] scaled from 1 to 6 app workers (1400ms)"
    ));
    let a = core.handle(Event::Scale(Scale::By(1)), 2500);
    assert!(scale_spawns(&a).is_empty());
    assert!(has_log(&a, "capped at 6"));
}

#[test]
fn a_refork_or_a_replacement_booting_takes_a_place_in_the_surge() {
    let (mut core, _) = started_with(scale_cfg(2, 1, 8));
    // A worker dies and is reforked: it boots, so scaling waits for it.
    let a = exited(&mut core, app_pid(1), 500);
    let refork = a
        .iter()
        .find_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Refork,
                apps,
            } => Some(apps.clone()),
            _ => None,
        })
        .expect("refork");
    core.handle(
        Event::AppsSpawned {
            batch: Batch::Refork,
            apps: vec![Spawned {
                id: refork[0].0,
                slot: refork[0].1,
                pid: Ok(40),
            }],
        },
        501,
    );
    let a = core.handle(Event::Scale(Scale::By(1)), 600);
    assert!(has_log(&a, "scale app workers from 2 to 3"));
    assert!(scale_spawns(&a).is_empty());
    let a = core.handle(listening(40, 7001), 700);
    assert_eq!(scale_spawns(&a), vec![(4, 2)]);
}

#[test]
fn a_waiting_client_hears_each_worker_and_the_outcome() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    let a = core.handle(control(7, Scale::By(1)), 1000);
    let apps = scale_spawns(&a);
    assert_eq!(apps, vec![(3, 2)]);
    assert_eq!(outcome(&a), None);
    let pids = spawned_scale(&mut core, &apps, 30, 1001);
    // A second client asking for one more joins the same scaling.
    let a = core.handle(control(8, Scale::By(1)), 1002);
    let more = scale_spawns(&a);
    spawned_scale(&mut core, &more, 31, 1003);
    let a = core.handle(listening(pids[0], 7001), 1500);
    assert_eq!(
        progress(&a),
        vec![(
            vec![7, 8],
            "app_worker#3:30 serves (3 of 4 app workers serve)".into()
        )]
    );
    assert_eq!(outcome(&a), None);
    let a = core.handle(listening(31, 7001), 1600);
    assert_eq!(
        outcome(&a),
        Some((vec![7, 8], Ok("4 app workers serve (600ms)".into())))
    );
    // Down: answered once the retired worker has exited (drained).
    let a = core.handle(control(9, Scale::By(-1)), 2000);
    assert!(a.contains(&Action::Terminate {
        pid: 31,
        limit: Duration::from_secs(5)
    }));
    assert_eq!(outcome(&a), None);
    let a = exited(&mut core, 31, 2300);
    assert_eq!(
        progress(&a),
        vec![(
            vec![9],
            "app_worker#4:31 retired (3 app workers serve)".into()
        )]
    );
    assert_eq!(
        outcome(&a),
        Some((vec![9], Ok("3 app workers serve (300ms)".into())))
    );
}

#[test]
fn what_cannot_be_done_is_said_to_the_client() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 2));
    let a = core.handle(control(1, Scale::By(1)), 1000);
    assert!(scale_spawns(&a).is_empty());
    assert_eq!(
        outcome(&a),
        Some((
            vec![1],
            Err(
                "2 app workers run, the most this master runs (EGG_CLUSTER_RS_MAX_WORKERS=2)"
                    .into()
            )
        ))
    );
    let (mut core, _) = started_with(scale_cfg(1, 2, 4));
    let a = core.handle(control(2, Scale::By(-1)), 1000);
    assert!(matches!(outcome(&a), Some((_, Err(e))) if e.contains("at least one")));
    core.handle(Event::Reload(ReloadReason::Signal), 1100);
    let a = core.handle(control(3, Scale::By(1)), 1200);
    assert!(matches!(outcome(&a), Some((_, Err(e))) if e.contains("a reload is in progress")));
}

#[test]
fn an_added_worker_that_dies_booting_fails_the_scaling_and_the_count_follows() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    let a = core.handle(control(5, Scale::To(5)), 1000);
    let apps = scale_spawns(&a);
    assert_eq!(apps, vec![(3, 2), (4, 3)]);
    let pids = spawned_scale(&mut core, &apps, 30, 1001);
    core.handle(listening(pids[0], 7001), 1200);
    let a = exited(&mut core, pids[1], 1300);
    // Not reforked; the other boots stop; 3 wanted now (2 + the one that serves).
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    assert!(has_log(
        &a,
        "[master] scaling to 5 app workers failed: the new app_worker#4:31 exited before it listened (code: 0, signal: null); 3 app workers wanted now, 3 serve"
    ));
    assert!(
        matches!(outcome(&a), Some((w, Err(e))) if w == vec![5] && e.contains("exited before it listened"))
    );
    assert_eq!(core.workers, 3);
}

#[test]
fn an_added_worker_that_does_not_serve_in_time_is_stopped() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    let a = core.handle(Event::Scale(Scale::By(1)), 1000);
    assert!(a.contains(&Action::After(
        Duration::from_secs(60),
        Timer::ScaleTimeout(1)
    )));
    spawned_scale(&mut core, &scale_spawns(&a), 30, 1001);
    let a = core.handle(Event::Timer(Timer::ScaleTimeout(1)), 61_000);
    assert!(a.contains(&Action::Terminate {
        pid: 30,
        limit: Duration::from_secs(5)
    }));
    assert!(has_log(
        &a,
        "failed: app_worker#3:30 did not listen within 60000ms"
    ));
    assert_eq!(core.workers, 2);
    // Its exit now is a retirement, not a death to refork.
    let a = exited(&mut core, 30, 61_100);
    assert!(has_log(&a, "app_worker#3:30 retired"));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
}

#[test]
fn scaling_down_drops_the_workers_not_spawned_first() {
    let (mut core, _) = started_with(scale_cfg(2, 1, 8));
    let a = core.handle(Event::Scale(Scale::To(5)), 1000);
    assert_eq!(scale_spawns(&a), vec![(3, 2)]);
    spawned_scale(&mut core, &[(3, 2)], 30, 1001);
    // Two of the three are not spawned yet: they go first, the booting one stays.
    let a = core.handle(Event::Scale(Scale::To(3)), 1100);
    assert!(!a.iter().any(|x| matches!(x, Action::Terminate { .. })));
    let a = core.handle(listening(30, 7001), 1200);
    assert!(scale_spawns(&a).is_empty());
    assert!(has_log(&a, "scaled from 2 to 3 app workers"));
}

#[test]
fn a_reload_during_scaling_waits_for_it() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    let a = core.handle(Event::Scale(Scale::By(1)), 1000);
    spawned_scale(&mut core, &scale_spawns(&a), 30, 1001);
    let a = core.handle(
        Event::Control {
            waiter: 3,
            request: ControlRequest::Reload,
        },
        1100,
    );
    assert!(has_log(
        &a,
        "reload (egg-cluster-rs reload) queued: scaling is in progress"
    ));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
    // The added worker serves: the reload replaces all three.
    let a = core.handle(listening(30, 7001), 1200);
    assert!(has_log(&a, "replacing 3 app worker(s), 2 at a time"));
    // A hung or oversized worker's replacement does not wait.
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    core.handle(Event::Scale(Scale::By(1)), 1000);
    let a = core.handle(
        Event::Reload(ReloadReason::Memory {
            pid: app_pid(0),
            rss: 1,
        }),
        1100,
    );
    assert!(has_log(&a, "replacing 1 app worker(s)"));
}

#[test]
fn a_close_answers_every_waiting_client() {
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    core.handle(control(1, Scale::By(1)), 1000);
    let a = core.handle(signal("SIGTERM"), 1100);
    assert_eq!(
        outcome(&a),
        Some((vec![1], Err("this master is closing".into())))
    );
    let (mut core, _) = started_with(scale_cfg(2, 2, 8));
    core.handle(
        Event::Control {
            waiter: 2,
            request: ControlRequest::Reload,
        },
        1000,
    );
    let a = core.handle(signal("SIGTERM"), 1100);
    assert_eq!(
        outcome(&a),
        Some((vec![2], Err("this master is closing".into())))
    );
}
