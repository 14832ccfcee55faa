'use strict';

/**
 * The watchdog thread of a worker process (started by lib/heartbeat.js). The main thread counts
 * its heartbeat ticks in `ticks`; when the count has not moved for `reportAfter` ms, the main
 * thread's event loop is stuck: connect the inspector to it (its messages interrupt running
 * JavaScript), pause it where it is, have it write a diagnostic report from there (the report's
 * JavaScript stack is where it is stuck), and let it go on. Once per stall.
 */

const fs = require('fs');
const { workerData } = require('worker_threads');
const { Session } = require('inspector');

const { ticks, interval, reportAfter, file } = workerData;
let seen = Atomics.load(ticks, 0);
let stalled = 0;
let reported = false;

setInterval(() => {
  const now = Atomics.load(ticks, 0);
  if (now !== seen) {
    seen = now;
    stalled = 0;
    reported = false;
    return;
  }
  stalled += interval;
  if (stalled >= reportAfter && !reported) {
    reported = true;
    report();
  }
}, interval);

function report() {
  const tmp = `${file}.${process.pid}.tmp`;
  const session = new Session();
  try {
    fs.mkdirSync(require('path').dirname(file), { recursive: true });
    session.connectToMainThread();
  } catch (_) {
    return;
  }
  session.once('Debugger.paused', ({ params }) => {
    const frame = params.callFrames[0];
    // The report's JavaScript stack is that of the error given: taken first thing, before
    // writeReport() loads what it lazily needs (those frames would crowd out the stuck ones).
    const expression = `(() => {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 30;
      const err = new Error('event loop blocked (egg-cluster-rs workerTimeout)');
      Error.stackTraceLimit = limit;
      return process.report.writeReport(${JSON.stringify(tmp)}, err);
    })()`;
    session.post('Debugger.evaluateOnCallFrame', { callFrameId: frame.callFrameId, expression, silent: true }, () => {
      try {
        // whole or not at all, for the master that waits for it: Node does not check its
        // writes, so a full disk leaves a cut-short file that must not pass for a report
        JSON.parse(fs.readFileSync(tmp, 'utf8'));
        fs.renameSync(tmp, file);
      } catch (_) {
        // not written: the master finds none and says why
        try {
          fs.unlinkSync(tmp);
        } catch (_) {
          // never created
        }
      }
      session.post('Debugger.resume', () => session.disconnect());
    });
  });
  session.post('Debugger.enable', () => session.post('Debugger.pause'));
}
