'use strict';

/**
 * One cluster master, forked by bench/index.js and bench/large.js:
 *
 *   node bench/run-master.js '{"impl":"egg-cluster"|"rs"|"stock","options":{...},"cluster":path}'
 *
 * Calls egg-cluster 2.5's or egg-cluster-rs's startCluster(options, cb) and, on ready, sends
 * `{ action: 'bench-ready', masterPid, t, ... }` to the bench driver. Everything else the driver
 * sends (`{ to: 'app' | 'agent', ... }`) is relayed by the master itself, as in production.
 */

const path = require('path');

const tRequire = Date.now();
const { impl, options, egg, cluster } = JSON.parse(process.argv[2]);
const ROOT = path.join(__dirname, '..');

let startCluster;
if (impl === 'baseline') {
  // a bare Node process with an IPC channel: the floor for figure 2
  startCluster = (options, cb) => setImmediate(cb);
  setInterval(() => {}, 1 << 30);
  process.on('SIGTERM', () => process.exit(0));
} else if (impl === 'egg-cluster' && egg === 4) {
  // egg 4's master: an async startCluster, no callback
  const eggjsCluster = require(path.join(ROOT, 'node_modules/@eggjs/cluster'));
  startCluster = (options, cb) => eggjsCluster.startCluster(options).then(() => cb(), cb);
} else if (impl === 'egg-cluster') {
  startCluster = require(path.join(ROOT, 'node_modules/egg-cluster')).startCluster;
} else if (impl === 'stock') {
  // bench/large.js: the master the app's own egg depends on, at `cluster` (egg-cluster 2.5's
  // callback, @eggjs/cluster 3 and 4's Promise; 4 is ESM)
  startCluster = (options, cb) => {
    let called = false;
    const done = err => {
      if (!called) cb(err);
      called = true;
    };
    import(require('url').pathToFileURL(require.resolve(cluster)).href)
      .then(m => {
        const r = (m.startCluster || m.default.startCluster)(options, done);
        if (r && typeof r.then === 'function') r.then(() => done(), done);
      }, done);
  };
} else if (impl === 'rs') {
  startCluster = require(ROOT).startCluster;
} else {
  throw new Error(`unknown impl ${impl}`);
}

const tStart = Date.now();
startCluster(options, err => {
  if (err) {
    console.error('[bench runner] start failed: %s', err && err.stack || err);
    process.exit(1);
  }
  const t = Date.now();
  process.send({
    action: 'bench-ready',
    masterPid: process.pid,
    t,
    // measured inside the master process: require of the cluster module, and startCluster -> callback
    requireMs: tStart - tRequire,
    startClusterMs: t - tStart,
  });
});
