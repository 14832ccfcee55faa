'use strict';

/**
 * What a child measures of itself for the master (docs/observability.md), carried by its
 * heartbeat once a second, so that nothing per request crosses to the master:
 *
 *  - `trackRequests(server)`: requests of the HTTP/HTTPS servers the master hands sockets to
 *    (shared, reusePort and sticky alike: all of them end up in the server's `request` event):
 *    counts by status class, in flight, and a duration histogram in a fixed array of buckets.
 *    Off with EGG_CLUSTER_RS_HTTP_METRICS=0.
 *  - `stats()`: those figures, plus event-loop utilization, V8 heap used/total and GC time,
 *    all cumulative since the child started (the master and Prometheus take differences).
 */

const v8 = require('v8');
const { performance, PerformanceObserver } = require('perf_hooks');

// Upper bounds (seconds) of the duration histogram's buckets, +Inf implied: the master has the
// same list (src/protocol/stats.rs, BUCKETS) and drops a heartbeat's histogram of another length.
const BUCKETS = [ 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 ];

const kStart = Symbol('egg-cluster-rs:request-start');
const http = {
  // responses by status class 1xx..5xx, then responses cut off before they were finished
  codes: [ 0, 0, 0, 0, 0, 0 ],
  inFlight: 0,
  buckets: new Array(BUCKETS.length + 1).fill(0),
  sum: 0,
};
let tracking = false;
let gcMs = 0;
let gcObserver = null;
let lastElu = null;

/**
 * Counts the requests of `server` from now on (idempotent per server)
 * @param {Object} server - an http or https server
 */
function trackRequests(server) {
  if (process.env.EGG_CLUSTER_RS_HTTP_METRICS === '0' || !server || server[kStart]) return;
  server[kStart] = true;
  tracking = true;
  server.prependListener('request', onRequest);
}

// One listener per request and one shared 'close' handler (no closure per request).
function onRequest(req, res) {
  http.inFlight++;
  res[kStart] = performance.now();
  res.on('close', onResponseClose);
}

function onResponseClose() {
  http.inFlight--;
  const seconds = (performance.now() - this[kStart]) / 1000;
  const status = this.statusCode;
  http.codes[this.writableFinished && status >= 100 && status < 600 ? Math.floor(status / 100) - 1 : 5]++;
  let i = 0;
  while (i < BUCKETS.length && seconds > BUCKETS[i]) i++;
  http.buckets[i]++;
  http.sum += seconds;
}

/**
 * Starts what stats() needs that runs in the background (the GC observer). Called once by the
 * heartbeat.
 */
function start() {
  if (gcObserver) return;
  try {
    gcObserver = new PerformanceObserver(list => {
      for (const entry of list.getEntries()) gcMs += entry.duration;
    });
    gcObserver.observe({ entryTypes: [ 'gc' ] });
  } catch (_) {
    // no GC time then
    gcObserver = null;
  }
}

/**
 * @return {Object} the figures for the heartbeat (see src/protocol/stats.rs)
 */
function stats() {
  const elu = performance.eventLoopUtilization();
  const recent = lastElu ? performance.eventLoopUtilization(elu, lastElu) : elu;
  lastElu = elu;
  const heap = v8.getHeapStatistics();
  const out = {
    elu: Math.round(recent.utilization * 10000) / 10000,
    busyMs: Math.round(elu.active),
    heapUsed: heap.used_heap_size,
    heapTotal: heap.total_heap_size,
    gcMs: Math.round(gcMs * 1000) / 1000,
  };
  if (tracking) {
    out.http = {
      codes: http.codes,
      inFlight: http.inFlight,
      buckets: http.buckets,
      sum: Math.round(http.sum * 1e6) / 1e6,
    };
  }
  return out;
}

module.exports = { trackRequests, start, stats, BUCKETS };
