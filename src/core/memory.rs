//! `maxMemoryRestart`: the serving app workers' RSS is sampled every `memoryCheckInterval`;
//! one over the limit is replaced by a rolling reload of its slot — never killed mid-request.

use super::children::{Child, Phase};
use super::{Action, Core, ReloadReason, Timer};
use crate::log::Level;

impl Core {
    /// Memory figures of the serving app workers (bytes of RSS): one over the limit is
    /// replaced — never killed mid-request — once no reload is running.
    pub(super) fn on_memory(&mut self, samples: Vec<(u32, u64)>, now: u64, out: &mut Vec<Action>) {
        if let Some(interval) = self.cfg.memory_check_interval {
            if !self.closing() {
                out.push(Action::After(interval, Timer::MemoryCheck));
            }
        }
        let Some(limit) = self.cfg.max_memory else {
            return;
        };
        if self.reload.is_some() {
            return;
        }
        let Some((pid, rss)) = samples
            .into_iter()
            .filter(|(_, rss)| *rss > limit)
            .max_by_key(|(_, rss)| *rss)
        else {
            return;
        };
        let Some(name) = self.children.get(pid).map(Child::name) else {
            return;
        };
        out.push(Action::Log(
            Level::Warn,
            format!(
                "[master] {name} uses {} MiB of memory (RSS {rss} bytes), over maxMemoryRestart {} MiB ({limit} bytes): replacing it",
                rss / (1024 * 1024),
                limit / (1024 * 1024)
            ),
        ));
        self.on_reload(ReloadReason::Memory { pid, rss }, now, out);
    }

    pub(super) fn on_memory_check(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        let pids: Vec<u32> = self
            .children
            .apps()
            .filter(|c| c.phase == Phase::Serving)
            .map(|c| c.pid)
            .collect();
        out.push(Action::SampleMemory(pids));
    }
}
