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

// A worker whose boot fails must exit, whatever the framework did about unhandled rejections:
// egg 3 logs them and carries on, which would leave the master waiting for a worker that never
// starts. (egg 4's workers load the framework asynchronously, so a constructor's throw becomes
// a rejection.)
exports.exitOnBootFailure = function exitOnBootFailure(boot) {
  boot.catch(err => {
    console.error(err);
    process.exit(1);
  });
};
