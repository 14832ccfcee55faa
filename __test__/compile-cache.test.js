'use strict';

const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { REFERENCE, startMaster } = require('./helper');

const [ NODE_MAJOR, NODE_MINOR ] = process.versions.node.split('.').map(Number);
// Node >= 22 has module.enableCompileCache; Node 20 has not, and the worker scripts leave it off.
const HAS_API = NODE_MAJOR >= 22;
// Node >= 24.12 takes `{ directory, portable }`; before, the worker passes the directory alone
// (the stand-in on Node 20 takes the object).
const PORTABLE = !HAS_API || NODE_MAJOR > 24 || (NODE_MAJOR === 24 && NODE_MINOR >= 12);

// lib/compile_cache.js in the worker scripts. A preloaded probe (fixtures/probes) records each
// call (role, directory, whether egg was already loaded); on Node >= 22 it calls the real API
// through, on Node 20 it stands in for the missing one (so the call order is checked there too).
describe(`compile cache (Node ${NODE_MAJOR}: ${HAS_API ? 'the real module.enableCompileCache' : 'no API, a stand-in records the calls'})`, () => {
  const probe = path.join(__dirname, 'fixtures', 'probes', 'fake-compile-cache.js');
  let out;
  beforeEach(function() {
    if (REFERENCE) this.skip(); // egg-cluster's worker scripts have none
    out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'compile-cache-')), 'calls.jsonl');
  });
  const calls = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map(l => JSON.parse(l)) : []);
  const env = extra => ({ NODE_OPTIONS: `--require ${probe}`, FAKE_COMPILE_CACHE_OUT: out, ...extra });

  it('every worker enables it under the app\'s run/ dir (egg 3), portable, before it loads the framework', async () => {
    const m = await startMaster('basic', {}, { env: env() });
    await m.waitFor('egg-ready', 60000);
    const dir = path.join(m.baseDir, 'run', 'compile-cache');
    const call = { dir, portable: PORTABLE, eggLoaded: false, real: HAS_API };
    assert.deepStrictEqual(calls().sort((a, b) => a.role.localeCompare(b.role)), [
      { role: 'agent', ...call },
      { role: 'app', ...call },
      { role: 'app', ...call },
    ]);
  });

  it('a NODE_COMPILE_CACHE the user set is theirs: the workers leave it to Node, which caches there', async () => {
    const own = path.join(path.dirname(out), 'own-cache');
    const m = await startMaster('basic', {}, { env: env({ NODE_COMPILE_CACHE: own }) });
    await m.waitFor('egg-ready', 60000);
    assert.deepStrictEqual(calls(), []);
    m.kill('SIGTERM'); // Node writes the cache as each worker exits
    assert.strictEqual((await m.waitExit(30000)).code, 0);
    assert(!fs.existsSync(path.join(m.baseDir, 'run', 'compile-cache')));
    if (HAS_API) assert(fs.readdirSync(own).some(d => d.startsWith(`${process.version}-`)), `${own}: ${fs.readdirSync(own)}`);
  });

  it('EGG_CLUSTER_RS_COMPILE_CACHE=0 leaves it off', async () => {
    const m = await startMaster('basic', {}, { env: env({ EGG_CLUSTER_RS_COMPILE_CACHE: '0' }) });
    await m.waitFor('egg-ready', 60000);
    assert.deepStrictEqual(calls(), []);
  });

  it(HAS_API
    ? 'the first start writes the cache, the second start of the same app reads it (Node\'s own debug output)'
    : 'Node 20: no cache directory is created', async () => {
    const first = await startMaster('basic', {}, { env: {} });
    await first.waitFor('egg-ready', 60000);
    first.kill('SIGTERM'); // Node writes the cache as each worker exits
    assert.strictEqual((await first.waitExit(30000)).code, 0);
    const cache = path.join(first.baseDir, 'run', 'compile-cache');
    if (!HAS_API) {
      assert(!fs.existsSync(cache), `${cache} exists on Node ${process.version}`);
      return;
    }
    // one sub-directory per Node version and V8 flags, one file per compiled module
    const versions = fs.readdirSync(cache);
    assert(versions.some(d => d.startsWith(`${process.version}-`)), `cache dirs: ${versions}`);
    const files = versions.reduce((n, d) => n + fs.readdirSync(path.join(cache, d)).length, 0);
    assert(files > 100, `only ${files} cached modules in ${cache}`);

    const second = await startMaster('basic', {}, { baseDir: first.baseDir, env: { NODE_DEBUG_NATIVE: 'COMPILE_CACHE' } });
    await second.waitFor('egg-ready', 60000);
    // "[compile cache] V8 code cache for CommonJS <file> was accepted" (Node 24+; 22: "cache for <file> was accepted")
    const accepted = second.output.split('\n').filter(l => /^\[compile cache\] .*cache for .*[\\/]node_modules[\\/]egg[\\/].* was accepted/.test(l));
    assert(accepted.length >= 3, `egg's modules read from the cache:\n${accepted.join('\n')}\n${second.tail(20)}`);
  });
});
