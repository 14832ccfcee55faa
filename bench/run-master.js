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
  // callback, @eggjs/cluster 3 and 4's Promise; 4 is ESM). An ESM app is started as
  // @eggjs/scripts' start-cluster.mjs starts it: the framework's ES module build imported, its
  // startCluster called — so a dual package (egg 4.0, @eggjs/cluster 3) runs its ESM build and
  // forks its ESM worker files, not the CommonJS ones a `require` would pick.
  startCluster = (options, cb) => {
    let called = false;
    const done = err => {
      if (!called) cb(err);
      called = true;
    };
    const entry = isEsmApp(options.baseDir) ? esmEntry(options.framework) : require.resolve(cluster);
    import(require('url').pathToFileURL(entry).href)
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

/** @return {boolean} whether the app's package.json says `"type": "module"` */
function isEsmApp(baseDir) {
  try {
    return JSON.parse(require('fs').readFileSync(path.join(baseDir, 'package.json'), 'utf8')).type === 'module';
  } catch (_) {
    return false;
  }
}

/**
 * The file an `import` of the package in `dir` loads: its exports' "." entry under the `import`
 * (else `default`) condition, else `module`/`main`.
 * @param {string} dir - a package's folder
 * @return {string} an absolute path
 */
function esmEntry(dir) {
  const pkg = JSON.parse(require('fs').readFileSync(path.join(dir, 'package.json'), 'utf8'));
  let target = pkg.exports && typeof pkg.exports === 'object' && '.' in pkg.exports ? pkg.exports['.'] : pkg.exports;
  while (target && typeof target === 'object') target = target.import || target.default;
  return path.join(dir, typeof target === 'string' ? target : pkg.module || pkg.main || 'index.js');
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
