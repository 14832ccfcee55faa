'use strict';

/**
 * What a worker is to its master: a process, or (startMode 'worker_threads') a thread of the
 * master's own process, which shares its pid.
 */

const { isMainThread, threadId } = require('worker_threads');

// The id the master and the other workers know this worker by (egg-pids, sendTo).
exports.workerId = isMainThread ? process.pid : threadId;

// egg-cluster-rs: a message sent as the master dies (this worker's 'listening', egg's messenger)
// fails with EPIPE before the channel's end is read, or, just after, with the channel closed.
// Node emits that as 'error' on `process`, and a cluster worker's `cluster.worker` re-emits it
// (listening first); with no listener there it is an uncaught exception, and graceful then takes
// the worker down by its error path (egg-cluster does): a worker whose master was SIGKILLed logs
// a write EPIPE instead of leaving through 'disconnect', which follows and is what exits it. Any
// other error is thrown on, as before.
const MASTER_GONE = new Set([ 'EPIPE', 'ECONNRESET', 'ERR_IPC_CHANNEL_CLOSED' ]);
function onSendError(err) {
  if (err && MASTER_GONE.has(err.code)) return;
  throw err;
}
process.on('error', onSendError);
const clusterWorker = require('cluster').worker;
if (clusterWorker) clusterWorker.on('error', onSendError);

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

/**
 * egg-cluster-rs: an app worker's failed boot, told to the master just before the exit, so that
 * a failed reload can name the file and the error (the master gets the exit code only). The
 * file: the one egg's loader failed to load (`[egg-core] load file: <file>, error: ...`, egg 4's
 * `[@eggjs/core] ...`), with the line a SyntaxError's stack starts with; else the first frame in
 * the app's own code.
 * @param {Function} send - the worker's send to the master
 * @param {Error} err - the boot error
 * @param {string} baseDir - the app's
 */
exports.reportBootError = function reportBootError(send, err, baseDir) {
  try {
    const stack = err && typeof err.stack === 'string' ? err.stack : '';
    let message = err && err.message !== undefined ? String(err.message) : String(err);
    let file;
    const loaded = /^\[[^\]]+\] load file: (.+?), error: ([\s\S]*)$/.exec(message);
    if (loaded) {
      file = loaded[1];
      message = loaded[2];
    }
    // a SyntaxError's stack begins with "<file>:<line>", the source line and a caret
    const at = /^(\/[^\n]+?):(\d+)\n/.exec(stack);
    if (at && (!file || at[1] === file)) {
      file = `${at[1]}:${at[2]}`;
    }
    if (!file) {
      for (const frame of stack.split('\n')) {
        const f = /\(?((?:\/)[^()\s]+?):(\d+):\d+\)?$/.exec(frame.trim());
        if (f && f[1].startsWith(baseDir) && !f[1].includes('/node_modules/')) {
          file = `${f[1]}:${f[2]}`;
          break;
        }
      }
    }
    const name = err && err.name ? err.name : 'Error';
    const error = `${name}: ${message}`;
    send({ to: 'master', action: 'egg-cluster-rs:boot-error', data: { error, file } });
  } catch {
    // the report is a courtesy: the exit is what counts
  }
};
