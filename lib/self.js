'use strict';

/**
 * What a worker is to its master: a process, or (startMode 'worker_threads') a thread of the
 * master's own process, which shares its pid.
 */

const { isMainThread, threadId } = require('worker_threads');

// The id the master and the other workers know this worker by (egg-pids, sendTo).
exports.workerId = isMainThread ? process.pid : threadId;

// SIGTERM to itself, so that graceful-process runs close() before the exit. A thread cannot
// signal itself alone (the signal would close the whole cluster): its SIGTERM handlers are run,
// as lib/thread_worker.js runs them when the master closes it.
exports.sigtermSelf = function sigtermSelf() {
  process.exitCode = 1;
  if (isMainThread) {
    process.kill(process.pid);
  } else {
    setImmediate(() => process.emit('SIGTERM', 'SIGTERM'));
  }
};
