//! The close's deadline: its steps' timeouts and a margin, then exit 2.

use std::time::Duration;

use super::*;

#[test]
fn a_close_not_over_by_both_timeouts_and_a_margin_exits_2() {
    // app 5000 ms, agent 3000 ms (cfg), orphans as the apps: the deadline is 18 s after the close
    // began
    let (mut core, _) = started(2);
    let a = core.handle(signal("SIGTERM"), 1000);
    assert!(
        a.contains(&Action::After(
            Duration::from_millis(18_000),
            Timer::CloseTimeout
        )),
        "{a:?}"
    );
    // the app workers are gone, the agent is not (even SIGKILL did not end it)
    for i in 0..2 {
        core.handle(
            Event::Exited {
                pid: app_pid(i),
                code: Some(0),
                signal: None,
                oom: None,
            },
            2000,
        );
    }
    core.handle(Event::Terminated(Group::Apps), 2000);
    let a = core.handle(Event::Timer(Timer::CloseTimeout), 19_000);
    assert_eq!(
        logs(&a),
        [
            "[master] the close is not over 18000ms after it began (the app, agent and orphans' close timeouts and 5000ms); still alive: agent_worker#1:10",
            "[master] close timeout, exiting with code:2",
        ]
    );
    assert_eq!(a.last(), Some(&Action::Exit(2)));
}

#[test]
fn a_close_that_ends_in_time_ignores_its_deadline() {
    let (mut core, _) = started(1);
    core.handle(signal("SIGTERM"), 1000);
    core.handle(
        Event::Exited {
            pid: app_pid(0),
            code: Some(0),
            signal: None,
            oom: None,
        },
        1500,
    );
    core.handle(Event::Terminated(Group::Apps), 1500);
    core.handle(
        Event::Exited {
            pid: AGENT,
            code: Some(0),
            signal: None,
            oom: None,
        },
        1600,
    );
    core.handle(Event::Terminated(Group::Agent), 1600);
    let a = core.handle(
        Event::Orphans {
            found: Vec::new(),
            at_close: true,
        },
        1600,
    );
    assert_eq!(a.last(), Some(&Action::Exit(0)));
    assert!(core
        .handle(Event::Timer(Timer::CloseTimeout), 14_000)
        .is_empty());
}

#[test]
fn the_deadline_starts_with_the_close_not_the_shutdown_delay() {
    let c = Config {
        shutdown_delay: Duration::from_secs(30),
        ..cfg(1)
    };
    let (mut core, _) = started_with(c);
    let a = core.handle(signal("SIGTERM"), 1000);
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::After(_, Timer::CloseTimeout))));
    // a timer left from nothing: not closing, nothing happens
    assert!(core
        .handle(Event::Timer(Timer::CloseTimeout), 2000)
        .is_empty());
    let a = core.handle(Event::Timer(Timer::ShutdownDelay), 31_000);
    assert!(a.contains(&Action::After(
        Duration::from_millis(18_000),
        Timer::CloseTimeout
    )));
}
