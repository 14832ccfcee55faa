'use strict';

/**
 * A worker thread's entry (startMode 'worker_threads'), run with `workerData: {fd, script, role}`
 * and the worker script's usual `argv`.
 *
 * It gives the thread what a forked worker has, then runs the same worker script a process runs:
 *  - Node's IPC channel to the master, on the socket the master made for this thread (what Node
 *    sets up from NODE_CHANNEL_FD in a child process): `process.send`, `process.on('message')`,
 *    handles. The native master routes the thread's messages as it routes a process's; they
 *    never pass through the master's JS thread.
 *  - for an app worker, the cluster worker role (NODE_UNIQUE_ID is in its env): `listen()` is
 *    answered by the master with a shared socket, or the slot's SO_REUSEPORT one, so any number
 *    of threads serve one port.
 */

const { workerData, parentPort } = require('worker_threads');

const { fd, script, role } = workerData;

// child_process's own set-up of a forked child's channel (exported for that purpose since 0.x)
require('child_process')._forkChild(fd, 'json');

// egg's messenger (sendmessage) and egg-cluster's thread workers answer the master with
// `parentPort.postMessage` when in a thread: over the channel instead.
parentPort.postMessage = function postMessage(message) {
  process.send(message);
};

if (role === 'app') {
  // what Node's bootstrap does for a process started with NODE_UNIQUE_ID
  require('cluster')._setupWorker();
  delete process.env.NODE_UNIQUE_ID;
  // A worker process whose channel closes (egg's graceful disconnects after an uncaught
  // exception) is SIGTERMed by the master; the master can no longer ask a thread: it does it.
  process.once('disconnect', () => setImmediate(() => process.emit('SIGTERM', 'SIGTERM')));
}

// A thread gets no signals: the master's close asks for the handlers a SIGTERM would run
// (graceful-process, the drain) with an internal message, which the app never sees.
process.on('internalMessage', message => {
  if (message && message.cmd === 'NODE_EGG_CLUSTER_RS_SIGNAL') {
    process.emit(message.signal, message.signal);
  }
});

require(script);
