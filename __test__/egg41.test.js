'use strict';

// egg 4.1 (beta; __test__/egg41/node_modules, Node >= 22.18) under this master, and what
// @eggjs/cluster 4's own master does there, decided point by point (docs/differences.md): the
// start lines name the app's egg and the dialect; `reusePort` comes from config.cluster.listen;
// `debugPort` listens beside the app's port; the compile cache is egg 4.1's
// `.egg/compile-cache`, portable; Node < 22.18 is refused with the requirement named.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { REFERENCE, ROOT, copyFixture, startMaster, get, getFreePort } = require('./helper');

const EGG41 = path.join(ROOT, '__test__/egg41/node_modules/egg');
const INSTALLED = fs.existsSync(path.join(EGG41, 'package.json'));
const VERSION = INSTALLED ? require(path.join(EGG41, 'package.json')).version : null;
const [ MAJOR, MINOR ] = process.versions.node.split('.').map(Number);
const NODE_OK = MAJOR > 22 || (MAJOR === 22 && MINOR >= 18);
// NODE_COMPILE_CACHE_PORTABLE / `{ portable }`: Node >= 24.12
const PORTABLE = MAJOR > 24 || (MAJOR === 24 && MINOR >= 12);
const PROD = { EGG_SERVER_ENV: 'prod' };

const esc = s => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * A copy of `fixture` whose framework is this package, on egg 4.1: `node_modules/egg` links
 * egg 4.1, as an app that installed both from npm has it.
 * @param {string} fixture -
 * @return {string} baseDir
 */
function onThisPackage(fixture) {
  const baseDir = copyFixture(fixture);
  const pkgFile = path.join(baseDir, 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  pkg.egg = { framework: 'egg-cluster-rs' };
  fs.writeFileSync(pkgFile, JSON.stringify(pkg));
  fs.mkdirSync(path.join(baseDir, 'node_modules'));
  fs.symlinkSync(EGG41, path.join(baseDir, 'node_modules/egg'));
  fs.symlinkSync(ROOT, path.join(baseDir, 'node_modules/egg-cluster-rs'));
  return baseDir;
}

// listening TCP sockets on `port` in this network namespace
function listeners(port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  let n = 0;
  for (const file of [ '/proc/net/tcp', '/proc/net/tcp6' ]) {
    for (const line of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1] && `${cols[1].slice(cols[1].indexOf(':'))} ` === hex && cols[3] === '0A') n++;
    }
  }
  return n;
}

// GET / on `port` until `count` workers answered (bounded); their pids
async function pidsOver(port, count) {
  const pids = new Set();
  for (let i = 0; i < 200 && pids.size < count; i++) {
    const res = await get(port, '/');
    assert.strictEqual(res.status, 200, `port ${port}: ${res.status} ${res.body}`);
    pids.add(JSON.parse(res.body).pid);
  }
  return [ ...pids ].sort();
}

const skipped = !INSTALLED ? 'egg 4.1 is not installed in __test__/egg41 (npm install does it)'
  : REFERENCE ? 'egg-cluster 2.5 cannot run egg 4.1'
    : null;

(skipped || !NODE_OK ? describe.skip : describe)(`egg 4.1 ${VERSION} under this master${skipped ? ` (skipped: ${skipped})` : !NODE_OK ? ` (skipped: egg 4.1 needs Node >= 22.18, this is ${process.version})` : ''}`, function() {
  this.timeout(240000);

  it('an ESM app with this package as its framework: the start lines name its egg, reusePort from its config, debugPort and the port both serve, the compile cache in .egg/, portable', async () => {
    const baseDir = onThisPackage('egg41-app');
    const debugPort = await getFreePort();
    const m = await startMaster(null, { debugPort }, { baseDir, env: PROD });
    const port = m.options.port;
    const ready = await m.waitReady(120000);
    assert.deepStrictEqual(ready, { port, debugPort, address: `http://127.0.0.1:${port}`, protocol: 'http' });
    const apps = (await m.waitForMessages('egg41-app-ready', 2)).map(msg => msg.data.pid).sort();

    // which egg runs, where it was found, and the dialect, after the framework's own line
    const ours = require(path.join(ROOT, 'package.json')).version;
    const lines = m.output.split('\n');
    const fw = lines.findIndex(l => l.endsWith(`[master] egg-cluster-rs version ${ours}`));
    const egg = lines.findIndex(l => l.endsWith(`[master] egg version ${VERSION} from ${path.join(baseDir, 'node_modules/egg')}: egg 4 dialect (@eggjs/cluster's protocol)`));
    assert(fw >= 0 && egg === fw + 1, m.tail());
    assert.match(m.output, new RegExp(`\\[master\\] egg-cluster-rs started debug port on http://127\\.0\\.0\\.1:${debugPort}$`, 'm'));

    // `reusePort: true` in config.cluster.listen: one SO_REUSEPORT socket per worker slot, the
    // debug port's too; each serves, and every worker answers on both
    assert.strictEqual(listeners(port), 2);
    assert.strictEqual(listeners(debugPort), 2);
    assert.deepStrictEqual(await pidsOver(port, 2), apps);
    assert.deepStrictEqual(await pidsOver(debugPort, 2), apps);
    // only the app's port counts a worker as started
    assert.strictEqual(m.lines(new RegExp(`\\[master\\] app_worker#\\d+:\\d+ started at ${port}, `)).length, 2, m.tail());
    assert.strictEqual(m.lines(/\[master\] app_worker#\d+:\d+ started at /).length, 2, m.tail());

    m.kill('SIGTERM'); // Node writes the compile cache as each worker exits
    assert.strictEqual((await m.waitExit(60000)).code, 0, m.tail());
    const cache = path.join(baseDir, '.egg', 'compile-cache');
    assert(fs.readdirSync(cache).some(d => d.startsWith(`${process.version}-`)), `${cache}: ${fs.readdirSync(cache)}`);
    assert(!fs.existsSync(path.join(baseDir, 'run', 'compile-cache')));

    // The app moved (as an image built elsewhere is): with egg as the framework, the stock
    // start line gets where egg was found; the moved cache is read where Node can (portable).
    const moved = copyFixture(baseDir);
    const again = await startMaster(null, { framework: EGG41 }, { baseDir: moved, env: { ...PROD, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' } });
    await again.waitReady(120000);
    assert.match(again.output, new RegExp(`\\[master\\] egg version ${esc(VERSION)} from ${esc(EGG41)}: egg 4 dialect \\(@eggjs/cluster's protocol\\)$`, 'm'));
    assert.doesNotMatch(again.output, /\[master\] egg-cluster-rs version/);
    // "[compile cache] V8 code cache for ESM file://<file> was accepted" (Node 22: "cache for
    // <file> was accepted"; the workers' lines may interleave).
    // app/router.js is compiled once per app worker: accepted only from the moved cache (a file
    // a process loads twice, as config.default.js, is also accepted from its own memory).
    const accepted = [ ...again.output.matchAll(/cache for (?:(?:ESM|CommonJS) )?(?:file:\/\/)?(\S+) was accepted/g) ].map(m => m[1]);
    const router = path.join(moved, 'app/router.js');
    // Node 22 keys its cache by absolute paths: nothing of the moved app is found there, but
    // the second worker may find what the first wrote into it during this start (each flushes
    // once it has loaded the app): at most one of the two accepts it, never both
    const routerAccepted = accepted.filter(f => f === router).length;
    const why = `${router} accepted ${routerAccepted} times: ${accepted.filter(f => f.startsWith(moved))}\n${again.tail(20)}`;
    if (PORTABLE) assert(routerAccepted >= 1, why);
    else assert(routerAccepted < 2, why);
    again.kill('SIGTERM');
    assert.strictEqual((await again.waitExit(60000)).code, 0, again.tail());
  });
});

(skipped || NODE_OK ? describe.skip : describe)(`egg 4.1 on Node < 22.18${skipped ? ` (skipped: ${skipped})` : NODE_OK ? ` (skipped: this is Node ${process.version})` : ''}`, () => {
  it('is refused at once, naming the egg and the Node.js it needs', async () => {
    const baseDir = onThisPackage('egg41-app');
    const m = await startMaster(null, {}, { baseDir, env: PROD });
    assert.strictEqual((await m.waitExit(30000)).code, 1, m.tail());
    const egg = path.join(baseDir, 'node_modules/egg');
    assert.match(m.stderr, new RegExp(`egg ${esc(VERSION)} \\(${esc(egg)}\\) needs Node\\.js >=22\\.18\\.0 \\(engines\\.node of its package\\.json\\); this is Node\\.js ${esc(process.version)}`));
    assert.match(m.stderr, /code: 'ERR_EGG_CLUSTER_NODE_VERSION'/);
    assert.deepStrictEqual(m.children(), []);
  });
});
