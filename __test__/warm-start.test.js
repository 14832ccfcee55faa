'use strict';

const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { REFERENCE, startMaster, get, waitUntil } = require('./helper');

// lib/warm_start.js: an app worker started beside the agent loads, while it waits for the
// go-ahead, the third-party modules the previous start's Application loaded. The fixture's
// plugin (node_modules/warm-probe) notes whether its module ran before egg's loader read the
// app's config, and appends `<pid> <before>` to a log; with WARM_START_GATE=1 the agent's boot
// waits (on a timer, as on a database) until the test creates `<baseDir>/release`.
describe('warm start', () => {
  let log;
  beforeEach(function() {
    if (REFERENCE) this.skip(); // egg-cluster starts no worker before the agent is ready
    log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'warm-start-')), 'loaded.log');
  });
  const loaded = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) : []);
  const probe = async port => JSON.parse((await get(port, '/warm')).body);

  it('records the first start\'s third-party modules; the next start loads them before the agent is ready', async () => {
    const first = await startMaster('warm-start', {}, { env: { WARM_START_LOADED_LOG: log } });
    const { port } = await first.waitReady();
    // loaded by egg's loader, after the config
    assert.strictEqual((await probe(port)).beforeLoader, false);
    const list = path.join(first.baseDir, 'run', 'egg-cluster-rs-warm-start.json');
    const recorded = await waitUntil(() => fs.existsSync(list) && JSON.parse(fs.readFileSync(list, 'utf8')), 30000, list);
    const heavy = path.join(first.baseDir, 'node_modules', 'warm-probe', 'lib', 'heavy.js');
    assert(recorded.cjs.includes(heavy), `${heavy} not in ${recorded.cjs.length} recorded modules`);
    // never the app's own files, never what the framework load had loaded already
    assert.deepStrictEqual(recorded.cjs.filter(f => !f.includes(`${path.sep}node_modules${path.sep}`)), []);
    assert(!recorded.cjs.some(f => /[\\/]node_modules[\\/]egg[\\/]index\.js$/.test(f)), 'egg\'s entry recorded');
    first.kill('SIGTERM');
    assert.strictEqual((await first.waitExit(30000)).code, 0);

    // the same app again, its agent held at boot: both workers load the plugin's module meanwhile
    fs.writeFileSync(log, '');
    const second = await startMaster('warm-start', {}, { baseDir: first.baseDir, env: { WARM_START_LOADED_LOG: log, WARM_START_GATE: '1' } });
    const early = await waitUntil(() => loaded().length >= 2 && loaded(), 60000,
      `both app workers loading warm-probe while the agent waits (loaded: ${loaded()})`);
    assert(early.every(l => l.endsWith(' true')), early.join('\n'));
    assert(!second.messages.some(m => m && m.action === 'egg-ready'), 'ready before the agent was released');
    fs.writeFileSync(path.join(first.baseDir, 'release'), '');
    const ready = await second.waitReady();
    assert.strictEqual((await probe(ready.port)).beforeLoader, true);
    assert.strictEqual(loaded().length, 2, loaded().join('\n')); // once per worker: not loaded again
    second.kill('SIGTERM');
    assert.strictEqual((await second.waitExit(30000)).code, 0);

    // EGG_CLUSTER_RS_WARM_START=0: as the first start
    fs.writeFileSync(log, '');
    const third = await startMaster('warm-start', {}, { baseDir: first.baseDir, env: { WARM_START_LOADED_LOG: log, EGG_CLUSTER_RS_WARM_START: '0' } });
    const { port: port3 } = await third.waitReady();
    assert.strictEqual((await probe(port3)).beforeLoader, false);
    assert(loaded().every(l => l.endsWith(' false')), loaded().join('\n'));
  });
});
