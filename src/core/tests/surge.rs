//! The reload surge: several replacements boot at once; a drain never holds up the next boot.

use super::*;

fn surge_cfg(workers: usize, surge: usize) -> Config {
    Config {
        reload_concurrency: surge,
        ..cfg(workers)
    }
}

/// The `(pid, slot)`s of the replacements spawned by `actions`.
pub(super) fn spawned_slots(actions: &[Action]) -> Vec<(u32, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnApps {
                batch: Batch::Replace,
                apps,
            } => Some(apps.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn terminated(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

fn done_line(actions: &[Action]) -> Option<String> {
    sends(actions)
        .into_iter()
        .find(|(t, m)| *t == Target::Parent && m.contains("reload-done"))
        .map(|(_, m)| m)
}

#[test]
fn a_surge_of_n_replaces_every_slot_at_once() {
    let (mut core, _) = started_with(surge_cfg(3, 3));
    let a = core.handle(Event::Reload(ReloadReason::Signal), 1000);
    assert_eq!(spawned_slots(&a), vec![(4, 0), (5, 1), (6, 2)]);
    assert!(has_log(&a, "replacing 3 app worker(s), 3 at a time"));
    for (i, (id, slot)) in [(4, 0), (5, 1), (6, 2)].into_iter().enumerate() {
        spawned_replacement(&mut core, id, slot, 30 + i as u32, 1001);
    }
    // Each old worker retires as soon as its own replacement serves, not before.
    let a = core.handle(listening(31, 7001), 1100);
    assert_eq!(terminated(&a), vec![21]);
    let a = core.handle(listening(30, 7001), 1110);
    assert_eq!(terminated(&a), vec![20]);
    let a = core.handle(listening(32, 7001), 1120);
    assert_eq!(terminated(&a), vec![22]);
    exited(&mut core, 21, 1200);
    exited(&mut core, 20, 1210);
    let a = exited(&mut core, 22, 1220);
    let done = done_line(&a).expect("reload-done");
    assert!(done.contains(r#""ok":true"#), "{done}");
    assert!(done.contains("[[21,31],[20,30],[22,32]]"), "{done}");
}

#[test]
fn a_surge_of_two_boots_the_next_slot_while_the_last_one_drains() {
    let (mut core, _) = started_with(surge_cfg(4, 2));
    let a = core.handle(Event::Reload(ReloadReason::Api), 1000);
    assert_eq!(spawned_slots(&a), vec![(5, 0), (6, 1)]);
    spawned_replacement(&mut core, 5, 0, 30, 1001);
    spawned_replacement(&mut core, 6, 1, 31, 1001);
    // Slot 1 serves first: its predecessor drains and slot 2 boots at once.
    let a = core.handle(listening(31, 7001), 1100);
    assert_eq!(terminated(&a), vec![21]);
    assert_eq!(spawned_slots(&a), vec![(7, 2)]);
    // The drain ending frees nothing: the surge counts boots only.
    let a = exited(&mut core, 21, 1150);
    assert!(spawned_slots(&a).is_empty());
    let a = core.handle(listening(30, 7001), 1200);
    assert_eq!(spawned_slots(&a), vec![(8, 3)]);
    spawned_replacement(&mut core, 7, 2, 32, 1201);
    spawned_replacement(&mut core, 8, 3, 33, 1201);
    core.handle(listening(32, 7001), 1300);
    core.handle(listening(33, 7001), 1300);
    exited(&mut core, 20, 1400);
    exited(&mut core, 22, 1400);
    let a = exited(&mut core, 23, 1500);
    assert!(has_log(&a, "done: 4 app worker(s) replaced (500ms)"));
}

#[test]
fn a_failed_boot_mid_surge_stops_the_boots_and_keeps_what_serves() {
    let (mut core, _) = started_with(surge_cfg(3, 2));
    core.handle(Event::Reload(ReloadReason::Signal), 1000);
    spawned_replacement(&mut core, 4, 0, 30, 1001);
    spawned_replacement(&mut core, 5, 1, 31, 1001);
    let a = core.handle(listening(30, 7001), 1100);
    assert_eq!(terminated(&a), vec![20]);
    assert_eq!(spawned_slots(&a), vec![(6, 2)]);
    spawned_replacement(&mut core, 6, 2, 32, 1101);
    // Slot 1's replacement dies booting: the reload fails; slot 2's boot is stopped, the old
    // workers of slots 1 and 2 keep serving, slot 0's replacement keeps its slot.
    let a = exited(&mut core, 31, 1200);
    assert!(has_log(
        &a,
        "failed: the new app_worker#5:31 exited before it listened"
    ));
    assert_eq!(terminated(&a), vec![32]);
    assert!(spawned_slots(&a).is_empty());
    let done = done_line(&a).expect("reload-done");
    assert!(
        done.contains(r#""ok":false"#) && done.contains("[[20,30]]"),
        "{done}"
    );
    // The stopped boot and the drained predecessor go without a refork.
    for (pid, now) in [(32, 1300), (20, 1310)] {
        let a = exited(&mut core, pid, now);
        assert!(
            !a.iter().any(|x| matches!(x, Action::SpawnApps { .. })),
            "{pid}"
        );
    }
}

#[test]
fn sigterm_during_a_surge_closes_without_more_boots() {
    let (mut core, _) = started_with(surge_cfg(3, 2));
    core.handle(Event::Reload(ReloadReason::Signal), 1000);
    spawned_replacement(&mut core, 4, 0, 30, 1001);
    spawned_replacement(&mut core, 5, 1, 31, 1001);
    core.handle(signal("SIGTERM"), 1050);
    // A replacement that serves late retires nobody and starts no boot.
    let a = core.handle(listening(30, 7001), 1100);
    assert!(spawned_slots(&a).is_empty());
    assert!(!terminated(&a).contains(&20));
    let a = exited(&mut core, 31, 1200);
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
}

#[test]
fn scaling_during_a_surge_is_refused() {
    let (mut core, _) = started_with(surge_cfg(2, 2));
    core.handle(Event::Reload(ReloadReason::Signal), 1000);
    let a = core.handle(Event::Scale(Scale::To(4)), 1001);
    assert!(has_log(&a, "scaling ignored"));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnApps { .. })));
}
