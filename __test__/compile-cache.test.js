'use strict';

const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { REFERENCE, startMaster } = require('./helper');

// Node >= 22's module.enableCompileCache in the worker scripts. CI and this suite run Node 20,
// which has no such API, so a preloaded stand-in (fixtures/probes) records the calls.
describe('compile cache (Node >= 22)', () => {
  const probe = path.join(__dirname, 'fixtures', 'probes', 'fake-compile-cache.js');
  let out;
  beforeEach(function() {
    if (REFERENCE) this.skip(); // egg-cluster's worker scripts have none
    out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'compile-cache-')), 'calls.jsonl');
  });
  const calls = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map(l => JSON.parse(l)) : []);
  const env = extra => ({ NODE_OPTIONS: `--require ${probe}`, FAKE_COMPILE_CACHE_OUT: out, ...extra });

  it('every worker enables it under the app\'s run/ dir before it loads the framework', async () => {
    const m = await startMaster('basic', {}, { env: env() });
    await m.waitFor('egg-ready', 60000);
    const dir = path.join(m.baseDir, 'run', 'compile-cache');
    assert.deepStrictEqual(calls().sort((a, b) => a.role.localeCompare(b.role)), [
      { role: 'agent', dir, eggLoaded: false },
      { role: 'app', dir, eggLoaded: false },
      { role: 'app', dir, eggLoaded: false },
    ]);
  });

  it('EGG_CLUSTER_RS_COMPILE_CACHE=0 leaves it off', async () => {
    const m = await startMaster('basic', {}, { env: env({ EGG_CLUSTER_RS_COMPILE_CACHE: '0' }) });
    await m.waitFor('egg-ready', 60000);
    assert.deepStrictEqual(calls(), []);
  });
});
