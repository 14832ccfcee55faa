'use strict';

/**
 * How much of the large app's Application construction is loading modules (egg 3, CommonJS):
 *
 *   node bench/large-constructor.js record      # construct once, record the modules it loaded
 *   node bench/large-constructor.js none        # construct again: the time it takes
 *   node bench/large-constructor.js preload     # load the recorded modules first, then construct
 *   BENCH_PRELOAD=node_modules node bench/large-constructor.js preload   # only the third-party ones
 *
 * One process, no cluster: `require(egg)`, then `new Application()` (egg 3's loader runs in the
 * constructor), timed; `preload` requires the recorded modules (the top-level ones) before it.
 * The large app must be built (node bench/fixtures/large/build.js egg3). Run each a few times.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');

const mode = process.argv[2] || 'none';
const dir = path.join(__dirname, 'fixtures', 'large', 'build', 'egg3');
const list = path.join(os.tmpdir(), 'egg-cluster-rs-large-constructor.json');
process.env.EGG_SERVER_ENV = 'prod';
process.env.NODE_ENV = 'production';
process.env.LARGE_APP_LOG_DIR = path.join(os.tmpdir(), 'egg-cluster-rs-large-constructor-logs');

const t0 = performance.now();
const egg = require(path.join(dir, 'node_modules', 'egg'));
const t1 = performance.now();
const before = new Set(Object.keys(require.cache));
let t2 = t1;
if (mode === 'preload') {
  const onlyThirdParty = process.env.BENCH_PRELOAD === 'node_modules';
  const files = JSON.parse(fs.readFileSync(list, 'utf8')).filter(f => !onlyThirdParty || f.includes(`${path.sep}node_modules${path.sep}`));
  let n = 0;
  for (const f of files) {
    if (require.cache[f]) continue;
    require(f);
    n++;
  }
  t2 = performance.now();
  console.log(`preloaded ${n} top-level modules${onlyThirdParty ? ' (node_modules only)' : ''} in ${(t2 - t1).toFixed(0)} ms`);
}
const app = new egg.Application({ baseDir: path.join(dir, 'app'), framework: path.join(dir, 'node_modules', 'egg') });
const t3 = performance.now();
console.log(`require(egg) ${(t1 - t0).toFixed(0)} ms; new Application() ${(t3 - t2).toFixed(0)} ms`);
if (mode === 'record') {
  const loaded = Object.keys(require.cache).filter(k => !before.has(k));
  fs.writeFileSync(list, JSON.stringify(loaded));
  console.log(`recorded ${loaded.length} modules (${loaded.filter(f => f.includes(`${path.sep}node_modules${path.sep}`)).length} under node_modules) in ${list}`);
}
// the agent's cluster-client leader is not there: nothing more to wait for
app.close().finally(() => process.exit(0));
