//! When to replace a dead app worker: cfork's limit (egg-cluster's), then exponential backoff
//! (ours) instead of giving up.
//!
//! cfork allows at most `limit` reforks within `duration` ms and then stops for good, leaving
//! the app with fewer workers until someone restarts it. Past the limit we keep reforking, each
//! time after a longer delay (100 ms doubling up to 15 s), and start over once a worker has
//! stayed up for 30 s.
//!
//! A spawn that fails because the master is short of a resource ([`SpawnError::Resource`]) is
//! no death: it is tried again after a short delay ([`SpawnRetry`]), outside the limit.

use std::collections::VecDeque;

pub const BACKOFF_START_MS: u64 = 100;
pub const BACKOFF_CAP_MS: u64 = 15_000;
/// A worker that lived this long ends a crash loop.
pub const STABLE_AFTER_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refork now (within cfork's limit).
    Now,
    /// cfork would stop here (`reachReforkLimit`); we refork after this many ms.
    After(u64),
    /// Refork is off (local env).
    Never,
}

#[derive(Debug)]
pub struct ReforkPolicy {
    enabled: bool,
    limit: usize,
    duration_ms: u64,
    /// Times of recent refork attempts, as cfork's `reforks` array.
    times: VecDeque<u64>,
    /// The next backoff delay, `None` while not in a crash loop.
    backoff_ms: Option<u64>,
}

impl ReforkPolicy {
    pub fn new(enabled: bool, limit: usize, duration_ms: u64) -> Self {
        ReforkPolicy {
            enabled,
            limit: limit.max(1),
            duration_ms,
            times: VecDeque::new(),
            backoff_ms: None,
        }
    }

    /// The delay the next refork of a crash loop would wait, `None` outside one.
    pub fn backoff_ms(&self) -> Option<u64> {
        self.backoff_ms
    }

    /// cfork 2's `reforkCount`: the refork attempts it remembers (at most `limit`).
    pub fn count(&self) -> usize {
        self.times.len()
    }

    /// A worker died unexpectedly after `uptime_ms` of serving (0 if it never did).
    pub fn decide(&mut self, now: u64, uptime_ms: u64) -> Decision {
        if !self.enabled {
            return Decision::Never;
        }
        if uptime_ms >= STABLE_AFTER_MS {
            self.backoff_ms = None;
        }
        // cfork's allow(): remember the attempt, keep at most `limit`, refuse when `limit`
        // attempts fall within `duration`.
        self.times.push_back(now);
        if self.times.len() > self.limit {
            self.times.pop_front();
        }
        let span = match (self.times.front(), self.times.back()) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        };
        let within_limit = self.times.len() < self.limit || span > self.duration_ms;
        if within_limit && self.backoff_ms.is_none() {
            return Decision::Now;
        }
        let delay = self.backoff_ms.unwrap_or(BACKOFF_START_MS);
        self.backoff_ms = Some((delay * 2).min(BACKOFF_CAP_MS));
        Decision::After(delay)
    }
}

/// Why a child could not be spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpawnError {
    /// The master is short of a resource (file descriptors, memory, processes): no fault of
    /// the app's, and over once the resource is back.
    Resource(String),
    Failed(String),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Resource(e) | SpawnError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<String> for SpawnError {
    fn from(e: String) -> Self {
        SpawnError::Failed(e)
    }
}

impl From<&str> for SpawnError {
    fn from(e: &str) -> Self {
        SpawnError::Failed(e.to_string())
    }
}

/// The first delay before a spawn that failed for want of a resource is tried again.
pub const SPAWN_RETRY_START_MS: u64 = 100;
pub const SPAWN_RETRY_CAP_MS: u64 = 5_000;

/// Spawns that failed for want of a resource of the master's (file descriptors, memory,
/// processes): no worker died, so they stay out of the refork limit; each is tried again after
/// a short delay, doubling while they keep failing, back to the shortest once one succeeds.
/// A streak of failures is said once when it starts and once when it ends.
#[derive(Debug, Default)]
pub struct SpawnRetry {
    next_ms: Option<u64>,
    /// The failed attempts of the streak in progress, and when it began.
    attempts: u32,
    since: u64,
}

impl SpawnRetry {
    /// A spawn failed at `now`: how long to wait before the next try.
    pub fn failed(&mut self, now: u64) -> u64 {
        if self.attempts == 0 {
            self.since = now;
        }
        self.attempts += 1;
        let delay = self.next_ms.unwrap_or(SPAWN_RETRY_START_MS);
        self.next_ms = Some((delay * 2).min(SPAWN_RETRY_CAP_MS));
        delay
    }

    /// Whether spawns are failing (a streak is in progress).
    pub fn failing(&self) -> bool {
        self.attempts > 0
    }

    /// Whether the failure just counted began a streak.
    pub fn streak_began(&self) -> bool {
        self.attempts == 1
    }

    /// A spawn succeeded at `now`: the streak that ends with it (failed attempts, ms), if any.
    pub fn succeeded(&mut self, now: u64) -> Option<(u32, u64)> {
        self.next_ms = None;
        let attempts = std::mem::take(&mut self.attempts);
        (attempts > 0).then(|| (attempts, now.saturating_sub(self.since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_env_never_reforks() {
        let mut p = ReforkPolicy::new(false, 60, 60_000);
        assert_eq!(p.decide(0, 0), Decision::Never);
    }

    #[test]
    fn cfork_limit_then_doubling_backoff_capped() {
        let mut p = ReforkPolicy::new(true, 3, 60_000);
        assert_eq!(p.decide(0, 0), Decision::Now);
        assert_eq!(p.decide(10, 0), Decision::Now);
        // The third attempt within the window reaches the limit.
        assert_eq!(p.decide(20, 0), Decision::After(100));
        assert_eq!(p.decide(30, 0), Decision::After(200));
        assert_eq!(p.decide(40, 0), Decision::After(400));
        let mut last = 0;
        for i in 0..20 {
            if let Decision::After(d) = p.decide(50 + i, 0) {
                last = d;
            }
        }
        assert_eq!(last, BACKOFF_CAP_MS);
    }

    #[test]
    fn a_stable_worker_ends_the_crash_loop() {
        let mut p = ReforkPolicy::new(true, 2, 60_000);
        p.decide(0, 0);
        assert_eq!(p.decide(1, 0), Decision::After(100));
        assert_eq!(p.decide(2, 0), Decision::After(200));
        // Long after, a worker that served 30 s dies: immediate refork again.
        assert_eq!(p.decide(200_000, STABLE_AFTER_MS), Decision::Now);
    }

    #[test]
    fn slow_deaths_stay_within_the_limit() {
        let mut p = ReforkPolicy::new(true, 3, 1_000);
        for i in 0..10 {
            assert_eq!(p.decide(i * 2_000, 0), Decision::Now);
        }
    }

    #[test]
    fn spawn_retries_double_up_to_the_cap_and_start_over_after_a_success() {
        let mut r = SpawnRetry::default();
        assert_eq!(r.succeeded(5), None);
        assert_eq!(r.failed(10), 100);
        assert!(r.streak_began());
        assert_eq!([r.failed(110), r.failed(310)], [200, 400]);
        assert!(!r.streak_began());
        for t in 0..10 {
            r.failed(1000 + t);
        }
        assert_eq!(r.failed(2000), SPAWN_RETRY_CAP_MS);
        assert_eq!(r.succeeded(2500), Some((14, 2490)));
        assert_eq!(r.succeeded(2600), None);
        assert_eq!(r.failed(3000), SPAWN_RETRY_START_MS);
        assert!(r.streak_began());
    }
}
