'use strict';

/**
 * worker_threads mode, the master's JS side. The native master decides when a thread starts and
 * stops; only JS can create a `Worker`, so it asks here (`{op: 'spawn'}`, `{op: 'terminate'}`)
 * and is told of each thread's id, uncaught error and exit. This is all of the threads' traffic
 * through the master's JS thread: their messages go over their own sockets to the native master
 * (lib/thread_worker.js).
 */

const fs = require('fs');
const path = require('path');
const { Worker } = require('worker_threads');

const BOOTSTRAP = path.join(__dirname, 'thread_worker.js');

module.exports = function threadHost(master) {
  const workers = new Map();
  return function onThread(req) {
    if (req.op === 'terminate') {
      const worker = workers.get(req.threadId);
      if (worker) worker.terminate();
      return;
    }
    let worker;
    try {
      worker = new Worker(BOOTSTRAP, {
        argv: req.argv,
        env: req.env,
        workerData: { fd: req.fd, script: req.script, role: req.role },
      });
    } catch (err) {
      // the thread never took the socket's end: it is ours to close
      try {
        fs.closeSync(req.fd);
      } catch (_) {
        // already closed
      }
      master.threadSpawned(req.role, req.id, null, String((err && err.message) || err));
      return;
    }
    const threadId = worker.threadId;
    workers.set(threadId, worker);
    worker.on('error', err => master.threadError(threadId, formatError(err)));
    worker.once('exit', code => {
      workers.delete(threadId);
      master.threadExited(threadId, code);
    });
    master.threadSpawned(req.role, req.id, threadId, null);
  };
};

// egg-logger's error body without its `nodejs.<name>: ` head (the master writes that): the
// message, then the stack below its first line
function formatError(err) {
  if (!(err instanceof Error)) return String(err);
  const stack = String(err.stack || '').split('\n').slice(1).join('\n');
  return stack ? `${err.message}\n${stack}` : err.message;
}
