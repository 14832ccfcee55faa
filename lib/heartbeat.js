'use strict';

/**
 * The worker's proof of life (egg-cluster-rs; see docs/self-healing.md). Called first thing by
 * every worker script.
 *
 *  - A timer on the worker's main event loop sends the master an internal message every
 *    EGG_CLUSTER_RS_HEARTBEAT ms, with the event-loop lag: the longest the loop was late since
 *    the previous tick (Node's event-loop delay monitor: a native timer, no JS), or how late
 *    this tick itself fired, whichever is more. (The tick's own delay alone would miss a loop
 *    blocked just before every tick: an interval re-arms from when it ran.) A worker
 *    whose loop is stuck sends nothing, and the master finds it hung past `workerTimeout`. The
 *    message is internal (`cmd: NODE_...`): neither the app nor `process.on('message')` sees it.
 *  - In a worker process, when EGG_CLUSTER_RS_HANG_REPORT is set (ms): a watchdog thread
 *    (lib/hang_reporter.js) that writes a diagnostic report of the main thread, stack and all,
 *    when the master finds the worker hung and asks for one (a request file in
 *    EGG_CLUSTER_RS_REPORT_DIR, looked for only while the main thread does not tick), never
 *    on its own; it gives up on pausing the main thread after EGG_CLUSTER_RS_HANG_REPORT ms.
 *    Node's own `--report-on-signal` cannot: its report is written by a JS signal handler,
 *    which a stuck loop never runs.
 */

const { isMainThread } = require('worker_threads');
const { monitorEventLoopDelay } = require('perf_hooks');

// ms; what the delay monitor records includes it. The monitor wakes the loop this often: at
// 20 ms it cost an idle worker about 0.35% of a core (210 ms of CPU a minute, bench/heartbeat.js),
// at 100 ms about a fifth of that; the lag it reports is then short by at most 100 ms, which a
// gauge meant to show loops blocked for a good part of a second (and hangs of seconds) can spare.
const RESOLUTION = 100;

module.exports = function heartbeat() {
  const interval = Number(process.env.EGG_CLUSTER_RS_HEARTBEAT);
  const pauseLimit = Number(process.env.EGG_CLUSTER_RS_HANG_REPORT);
  const reportDir = process.env.EGG_CLUSTER_RS_REPORT_DIR;
  delete process.env.EGG_CLUSTER_RS_HEARTBEAT;
  delete process.env.EGG_CLUSTER_RS_HANG_REPORT;
  delete process.env.EGG_CLUSTER_RS_REPORT_DIR;
  if (!(interval > 0) || typeof process.send !== 'function') return;

  // the count of ticks, shared with the watchdog thread
  const ticks = isMainThread && pauseLimit > 0 && reportDir ? new Int32Array(new SharedArrayBuffer(4)) : null;
  const beat = { cmd: 'NODE_EGG_CLUSTER_RS_BEAT', lag: 0 };
  const noop = () => {};
  const stats = childStats();
  const delay = monitorEventLoopDelay({ resolution: RESOLUTION });
  delay.enable();
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    // Node schedules the next run `interval` after this one starts
    const late = now - last - interval;
    const blocked = delay.count ? delay.max / 1e6 - RESOLUTION : 0;
    delay.reset();
    beat.lag = Math.max(0, Math.round(Math.max(late, blocked)));
    last = now;
    if (ticks) Atomics.add(ticks, 0, 1);
    beat.stats = stats();
    // a callback: a closed channel is not an 'error' event on process
    if (process.connected) process.send(beat, noop);
  }, interval);
  timer.unref();

  if (ticks) startReporter(ticks, interval, pauseLimit, reportDir);
};

/**
 * What the heartbeat carries besides the lag (lib/child_stats.js), and the answers to the
 * master's /metrics questions (lib/app_metrics.js): both ride this channel, as the beat does.
 * @return {Function} the figures of the moment
 */
function childStats() {
  const stats = require('./child_stats');
  stats.start();
  require('./app_metrics').answer();
  return stats.stats;
}

function startReporter(ticks, interval, pauseLimit, dir) {
  const { Worker } = require('worker_threads');
  try {
    const worker = new Worker(require('path').join(__dirname, 'hang_reporter.js'), {
      workerData: { ticks, interval, pauseLimit, dir },
      // it only waits and, once, talks to the inspector
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
      stdout: true,
      stderr: true,
    });
    worker.unref();
    // a watchdog that cannot run is no reason for the worker not to
    worker.on('error', noopError);
  } catch (_) {
    // same
  }
}

function noopError() {}
