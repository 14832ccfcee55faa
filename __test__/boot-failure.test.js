'use strict';

const assert = require('assert');
const path = require('path');
const { TS, FIXTURES, startMaster, waitDead, findProcesses } = require('./helper');

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

  // issue #22: the dialect comes from what egg is, and a boot error ends the start in either.
  describe('a framework named egg that is not egg itself', () => {
    async function bootFailure(fixture, framework, re) {
      const m = await startMaster(fixture, { framework: path.join(FIXTURES, framework) }, { env: { EGG_SERVER_ENV: 'prod' } });
      const exit = await m.waitExit(60000);
      assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
      assert.match(m.stderr, new RegExp(`${TS}ERROR ${m.pid} \\[master\\] ${re} start fail, exiting with code:1$`, 'm'), m.tail());
      assert.match(m.stderr, new RegExp(`${TS}ERROR ${m.pid} \\[master\\] exit with code:1$`, 'm'));
      assertNoStartReport(m);
      await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
      return m;
    }

    it('a wrapper named egg 9.9.9 over egg 3 gets the egg 3 dialect: an agent boot error exits 1', async () => {
      const m = await bootFailure('agent-throw', 'wrapped-egg', 'agent_worker#1:\\d+');
      assert.match(m.stderr, /agent boom at boot/);
      // egg 3's start line, not egg 4's (" 🥚🥚🥚🥚")
      assert.match(m.stdout, new RegExp(`${TS}INFO ${m.pid} \\[master\\] =================== egg start =====================$`, 'm'), m.tail());
      // the start line names the wrapper, the egg it wraps and the dialect that decided
      assert.match(m.stdout, /\[master\] egg version 9\.9\.9 from \S+wrapped-egg, a wrapper of egg 3\.\d+\.\d+ from \S+: egg 3 dialect/, m.tail());
    });

    it('under the wrong dialect (egg 4 workers over egg 3) an agent boot error still exits 1', async () => {
      const m = await bootFailure('agent-throw', 'mislabeled-egg', 'agent_worker#1:\\d+');
      assert.match(m.stdout, /egg start 🥚🥚🥚🥚/, 'the egg 4 dialect, as the wrapper claims');
      assert.match(m.stderr, /agent boom at boot/);
    });

    it('under the wrong dialect (egg 4 workers over egg 3) an app worker boot error still exits 1', async () => {
      const m = await bootFailure('app-throw', 'mislabeled-egg', 'app_worker#\\d+:\\d+');
      assert.match(m.stdout, /egg start 🥚🥚🥚🥚/, 'the egg 4 dialect, as the wrapper claims');
      assert.match(m.stderr, /app boom at boot/);
    });
  });
});
