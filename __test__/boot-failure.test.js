'use strict';

const assert = require('assert');
const { TS, startMaster, waitDead, findProcesses } = require('./helper');

// startCluster's callback and Promise: fixtures/start.js reports them to the test process
// (startCluster-callback, startCluster-resolved, startCluster-rejected); a failed start must fire
// neither, as egg-cluster's master just exits 1.
function assertNoStartReport(m) {
  const reported = m.messages.filter(msg => msg && /^startCluster-/.test(msg.action));
  assert.deepStrictEqual(reported, [], m.tail());
}

describe('boot failure', () => {
  it('agent throws at boot: master exits 1, no callback nor Promise settles', async () => {
    const m = await startMaster('agent-throw', {}, { env: { EGG_SERVER_ENV: 'prod' } });
    const exit = await m.waitExit(60000);
    assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
    const re = new RegExp(`${TS}ERROR ${m.pid} \\[master\\] agent_worker#1:(\\d+) start fail, exiting with code:1$`, 'm');
    const match = m.stderr.match(re);
    assert(match, m.tail());
    assert.match(m.stderr, new RegExp(`${TS}ERROR ${m.pid} \\[master\\] exit with code:1$`, 'm'));
    assert.match(m.stderr, /agent boom at boot/);
    assert.doesNotMatch(m.output, /app_worker#1:\d+ start/, 'no app worker forked');
    assertNoStartReport(m);
    await waitDead([ Number(match[1]) ], 5000);
    await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
  });

  it('app worker throws at boot: master exits 1, the agent goes away, no callback nor Promise settles', async () => {
    const m = await startMaster('app-throw', {}, { env: { EGG_SERVER_ENV: 'prod' } });
    const exit = await m.waitExit(60000);
    assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
    assert.match(m.stderr, new RegExp(`${TS}ERROR ${m.pid} \\[master\\] app_worker#\\d+:\\d+ start fail, exiting with code:1$`, 'm'));
    assert.match(m.stderr, /app boom at boot/);
    assert.match(m.stderr, new RegExp(`${TS}ERROR ${m.pid} \\[master\\] exit with code:1$`, 'm'));
    assert(!m.messages.some(msg => msg.action === 'egg-ready'));
    assertNoStartReport(m);
    await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
  });
});
