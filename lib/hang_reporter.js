'use strict';

/**
 * The watchdog thread of a worker process (started by lib/heartbeat.js). The main thread counts
 * its heartbeat ticks in `ticks`. A report is written when, and only when, the master asks for
 * one: it found the worker hung, and wrote `<dir>/hung.<pid>.request` (the worker's IPC channel
 * is read by the stuck thread, hence a file), whose text is the report's message. The request
 * is looked for only while the main thread does not tick (one stat an interval, nothing while
 * it runs). Then: connect the inspector to the main thread (its messages interrupt running
 * JavaScript), pause it where it is, have it write a diagnostic report from there (the report's
 * JavaScript stack is where it is stuck), and let it go on. What stops it is written to
 * `hung.<pid>.report.error` for the master's log line: a main thread that does not pause
 * within `pauseLimit` ms is stuck in native code.
 */

const fs = require('fs');
const path = require('path');
const { workerData } = require('worker_threads');
const { Session } = require('inspector');

const { ticks, interval, pauseLimit, dir } = workerData;
const name = what => path.join(dir, `hung.${process.pid}.${what}`);
const file = name('report.json');
const request = name('request');
const failed = name('report.error');
// a request older than this thread is another process's (one that had this pid)
const started = Date.now();
let seen = Atomics.load(ticks, 0);
let busy = false;

setInterval(() => {
  const now = Atomics.load(ticks, 0);
  if (now !== seen) {
    seen = now;
    return;
  }
  if (busy) return;
  const message = take();
  if (message === null) return;
  busy = true;
  report(message, () => {
    busy = false;
  });
}, interval);

/** @return {?string} the master's request (consumed), null if there is none */
function take() {
  try {
    if (fs.statSync(request).mtimeMs < started) return null;
    const message = fs.readFileSync(request, 'utf8');
    fs.unlinkSync(request);
    return message;
  } catch (_) {
    return null;
  }
}

/** Whole or not at all, for the master that waits for it. */
function writeWhole(target, write) {
  const tmp = `${target}.${process.pid}.tmp`;
  write(tmp);
  fs.renameSync(tmp, target);
}

function report(message, done) {
  const tmp = `${file}.${process.pid}.tmp`;
  const session = new Session();
  let timer = null;
  let finished = false;
  const finish = why => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    if (why) {
      try {
        fs.unlinkSync(tmp);
      } catch (_) {
        // not there
      }
      try {
        writeWhole(failed, t => fs.writeFileSync(t, why));
      } catch (_) {
        // the master says it found nothing
      }
    }
    try {
      session.disconnect();
    } catch (_) {
      // not connected
    }
    done();
  };
  try {
    // what writeReport() would fail on (it only prints its error), said with its reason
    fs.writeFileSync(tmp, '');
  } catch (err) {
    return finish(`cannot write ${path.basename(tmp)}: ${err.message}`);
  }
  try {
    session.connectToMainThread();
  } catch (err) {
    return finish(`cannot connect the inspector to the main thread: ${err.message}`);
  }
  timer = setTimeout(() => finish(`its JS thread did not stop within ${pauseLimit / 1000} s: stuck in native code?`), pauseLimit);
  session.once('Debugger.paused', ({ params }) => {
    clearTimeout(timer);
    const frame = params.callFrames[0];
    // The report's JavaScript stack is that of the error given: taken first thing, before
    // writeReport() loads what it lazily needs (those frames would crowd out the stuck ones).
    const expression = `(() => {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 30;
      const err = new Error(${JSON.stringify(message)});
      Error.stackTraceLimit = limit;
      return process.report.writeReport(${JSON.stringify(tmp)}, err);
    })()`;
    session.post('Debugger.evaluateOnCallFrame', { callFrameId: frame.callFrameId, expression, silent: true }, (err, res) => {
      let why = null;
      try {
        if (err) throw err;
        const thrown = res && res.exceptionDetails;
        if (thrown) throw new Error((thrown.exception && thrown.exception.description) || thrown.text);
        if (!res.result || !res.result.value) throw new Error('it wrote nothing');
        // Node does not check its writes: a full disk leaves a cut-short file, not a report
        try {
          JSON.parse(fs.readFileSync(tmp, 'utf8'));
        } catch (e) {
          throw new Error(`it wrote a report cut short (is ${path.basename(dir)}/ full?): ${e.message}`);
        }
        fs.renameSync(tmp, file);
      } catch (e) {
        why = `process.report.writeReport() failed: ${e.message}`;
      }
      session.post('Debugger.resume', () => finish(why));
    });
  });
  session.post('Debugger.enable', () => session.post('Debugger.pause'));
}
