'use strict';

const assert = require('assert');
const { TS, startMaster } = require('./helper');

// The master's own log lines at one level, e.g. lines('DEBUG', stdout)
function lines(level, text) {
  const re = new RegExp(`^${TS}${level} \\d+ \\[master\\] (.*)$`, 'gm');
  return [ ...text.matchAll(re) ].map(m => m[1]);
}

describe('logs', () => {
  it('local env: the verbose lines are DEBUG, hidden at the default level', async () => {
    const m = await startMaster('basic', { workers: 1 }, { env: { EGG_SERVER_ENV: 'local' } });
    await m.waitReady();
    const info = lines('INFO', m.stdout);
    assert(info.some(l => /^egg started on http:\/\/127\.0\.0\.1:\d+ \(\d+ms\)$/.test(l)), m.tail());
    assert(info.some(l => /^agent_worker#1:\d+ started \(\d+ms\)$/.test(l)));
    // egg-cluster's this.log(): DEBUG in local env, below the default INFO level
    assert.deepStrictEqual(lines('DEBUG', m.stdout), []);
    assert(!/start with clusterPort/.test(m.stdout), 'a verbose line leaked at INFO');
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0);
  });

  it('console colours as chalk decides them (supports-color): none on a pipe, FORCE_COLOR=1 colours', async () => {
    const plain = await startMaster('basic', { workers: 1 }, { env: { EGG_SERVER_ENV: 'prod' } });
    const colored = await startMaster('basic', { workers: 1 }, { env: { EGG_SERVER_ENV: 'prod', FORCE_COLOR: '1' } });
    await Promise.all([ plain.waitReady(), colored.waitReady() ]);
    await plain.waitFor(/\[master\] egg started on /);
    assert.doesNotMatch(plain.output, /\x1b\[/, plain.tail());
    // egg-logger's console formatter: the [category] in blue, the duration in green
    const started = `\x1b\\[34m\\[master\\]\x1b\\[39m egg started on http://127\\.0\\.0\\.1:\\d+ \\(\x1b\\[32m\\d+ms\x1b\\[39m\\)$`;
    await colored.waitFor(new RegExp(`${TS}INFO ${colored.pid} ${started}`, 'm'), 5000);
    for (const m of [ plain, colored ]) {
      m.kill('SIGTERM');
      assert.strictEqual((await m.waitExit()).code, 0);
    }
  });

  it('EGG_MASTER_LOGGER_LEVEL=DEBUG shows them as DEBUG lines', async () => {
    const m = await startMaster('basic', { workers: 1 }, { env: { EGG_SERVER_ENV: 'local', EGG_MASTER_LOGGER_LEVEL: 'DEBUG' } });
    await m.waitReady();
    const debug = lines('DEBUG', m.stdout);
    assert(debug.some(l => /^agent_worker#1:\d+ start with clusterPort:\d+$/.test(l)), m.tail());
    assert(debug.some(l => /^app_worker#1:\d+ started at \d+, remain 0 \(\d+ms\)$/.test(l)));
    assert(debug.some(l => /^start with env: isProduction: false, EGG_SERVER_ENV: local, NODE_ENV: undefined$/.test(l)));
    m.kill('SIGTERM');
    await m.waitExit();
    assert(lines('DEBUG', m.stdout).includes('close done, exiting with code:0'), m.tail());
  });

  it('EGG_MASTER_LOGGER_LEVEL=WARN hides INFO; errors still go to stderr', async () => {
    const m = await startMaster('agent-throw', { workers: 1 }, { env: { EGG_SERVER_ENV: 'prod', EGG_MASTER_LOGGER_LEVEL: 'WARN' } });
    assert.strictEqual((await m.waitExit()).code, 1);
    assert.deepStrictEqual(lines('INFO', m.stdout), [], m.tail());
    assert(lines('ERROR', m.stderr).some(l => /^agent_worker#1:\d+ start fail, exiting with code:1$/.test(l)), m.tail());
    assert(lines('ERROR', m.stderr).includes('exit with code:1'));
  });
});
