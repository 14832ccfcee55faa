//! What dead children leave behind: looked for after an unexpected exit and at the close's
//! end, terminated, and waited for before the exit.

use std::time::Duration;

use super::*;

fn orphan(pid: u32) -> Orphan {
    Orphan {
        pid,
        start: 7,
        cmd: "node -e x".into(),
    }
}

fn finds(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FindOrphans { at_close } => Some(*at_close),
            _ => None,
        })
        .collect()
}

fn killed(pid: u32) -> Event {
    Event::Exited {
        pid,
        code: None,
        signal: Some("SIGKILL"),
        oom: None,
    }
}

#[test]
fn an_unexpected_exit_is_followed_by_a_search_and_what_is_found_is_terminated() {
    let (mut core, _) = started(2);
    assert_eq!(finds(&core.handle(killed(app_pid(0)), 200)), [false]);
    let a = core.handle(
        Event::Orphans {
            found: vec![orphan(99)],
            at_close: false,
        },
        201,
    );
    assert!(has_log(
        &a,
        "[master] 1 process left behind by dead workers: 99 (node -e x); terminating it (SIGKILL after 5000ms)"
    ));
    assert!(a.contains(&Action::TerminateOrphans {
        orphans: vec![orphan(99)],
        limit: Duration::from_secs(5),
        at_close: false,
    }));
    // nothing found: nothing said
    assert!(core
        .handle(
            Event::Orphans {
                found: Vec::new(),
                at_close: false
            },
            202
        )
        .iter()
        .all(|x| matches!(x, Action::Routes(..))));
    // the agent's death too
    assert_eq!(finds(&core.handle(killed(AGENT), 300)), [false]);
}

#[test]
fn retirements_close_exits_and_threads_leave_no_orphans_to_look_for() {
    // a retiring worker's tree is terminated with it
    let (mut core, _) = started(2);
    core.handle(Event::Scale(Scale::By(-1)), 100);
    let retiring = core
        .status()
        .children
        .iter()
        .find(|c| c.state == "retiring")
        .map(|c| c.pid);
    let retiring = retiring.expect("a worker retires");
    assert!(finds(&core.handle(killed(retiring), 200)).is_empty());
    // in worker_threads mode children are threads of the master
    let mut c = cfg(2);
    c.threads = true;
    let (mut core, _) = started_with(c);
    assert!(finds(&core.handle(killed(app_pid(0)), 200)).is_empty());
}

#[test]
fn the_close_ends_with_the_orphans_then_exits() {
    let (mut core, _) = started(1);
    core.handle(signal("SIGTERM"), 100);
    // the workers' exits in the close: their trees are being terminated, no search
    assert!(finds(&core.handle(killed(app_pid(0)), 150)).is_empty());
    core.handle(Event::Terminated(Group::Apps), 200);
    let a = core.handle(Event::Terminated(Group::Agent), 300);
    assert_eq!(finds(&a), [true]);
    assert!(!a.contains(&Action::Exit(0)));
    let a = core.handle(
        Event::Orphans {
            found: vec![orphan(99), orphan(98)],
            at_close: true,
        },
        301,
    );
    assert!(has_log(
        &a,
        "2 processes left behind by dead workers: 99 (node -e x), 98 (node -e x); terminating them"
    ));
    assert!(a.contains(&Action::TerminateOrphans {
        orphans: vec![orphan(99), orphan(98)],
        limit: Duration::from_secs(5),
        at_close: true,
    }));
    assert!(!a.contains(&Action::Exit(0)));
    let a = core.handle(Event::Terminated(Group::Orphans), 400);
    assert!(has_log(&a, "[master] close done, exiting with code:0"));
    assert_eq!(a.last(), Some(&Action::Exit(0)));

    // none found: the exit follows at once
    let (mut core, _) = started(1);
    core.handle(signal("SIGTERM"), 100);
    core.handle(Event::Terminated(Group::Apps), 200);
    core.handle(Event::Terminated(Group::Agent), 300);
    let a = core.handle(
        Event::Orphans {
            found: Vec::new(),
            at_close: true,
        },
        301,
    );
    assert_eq!(a.last(), Some(&Action::Exit(0)));
}
