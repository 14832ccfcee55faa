'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  TS, REFERENCE, copyFixture, startMaster, waitDead, isAlive, findProcesses, logTime,
} = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };
// let the workers' graceful-process log at INFO, to see who exits when
const WORKER_LOGS = { EGG_APP_WORKER_LOGGER_LEVEL: 'INFO', EGG_AGENT_WORKER_LOGGER_LEVEL: 'INFO' };

function esc(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// a master INFO line: "<ts> INFO <master pid> [master] <text>"
function masterLine(m, text, level = 'INFO') {
  return new RegExp(`${TS}${level} ${m.pid} \\[master\\] ${text}$`);
}

/**
 * Indices of the lines, in order; asserts each is found after the previous one
 * @param {Object} m - master handle
 * @param {RegExp[]} res -
 * @return {number[]} -
 */
function assertInOrder(m, res) {
  const lines = m.output.split('\n');
  const found = [];
  let from = 0;
  for (const re of res) {
    const i = lines.findIndex((line, idx) => idx >= from && re.test(line));
    assert(i >= 0, `${re} not found after line ${from}\n${m.tail(80)}`);
    found.push(i);
    from = i + 1;
  }
  return found;
}

describe('close', () => {
  for (const sig of [ 'SIGTERM', 'SIGINT', 'SIGQUIT' ]) {
    it(`${sig}: closes app workers, then the agent, exits 0 and leaves nothing`, async () => {
      const m = await startMaster('basic', {}, { env: { ...PROD, ...WORKER_LOGS } });
      await m.waitReady();
      const { agent, app } = m.workers();
      assert.strictEqual(agent.length, 1);
      assert.strictEqual(app.length, 2);

      m.kill(sig);
      const exit = await m.waitExit(20000);
      assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());

      const idx = assertInOrder(m, [
        masterLine(m, `master is killed by signal ${sig}, closing`),
        masterLine(m, 'system memory: total \\d+, free \\d+'),
        masterLine(m, 'process info: heap_limit \\d+, heap_used \\d+'),
        masterLine(m, 'send kill SIGTERM to app workers, will exit with code:0 after 5000ms'),
        masterLine(m, 'wait 5000ms'),
        masterLine(m, 'send kill SIGTERM to agent worker, will exit with code:0 after 5000ms'),
        masterLine(m, 'wait 5000ms'),
        masterLine(m, 'close done, exiting with code:0'),
        masterLine(m, 'exit with code:0'),
      ]);
      assert.strictEqual(m.lines(/\[master\] master is killed by signal/).length, 1);

      // every app worker exited before the master turned to the agent
      const lines = m.output.split('\n');
      for (const pid of app) {
        const i = lines.findIndex(line => new RegExp(`${TS}INFO ${pid} \\[app_worker\\] exit with code:0$`).test(line));
        assert(i > idx[3] && i < idx[5], `app_worker ${pid} exit line at ${i}, expected between ${idx[3]} and ${idx[5]}\n${m.tail(80)}`);
      }
      const agentSigterm = lines.findIndex(line =>
        new RegExp(`${TS}INFO ${agent[0]} \\[agent_worker\\] receive signal SIGTERM, exiting with code:0$`).test(line));
      assert(agentSigterm > idx[5], `agent got SIGTERM at line ${agentSigterm}, before the master sent it (${idx[5]})`);

      await waitDead([ ...agent, ...app ], 2000);
      assert.deepStrictEqual(findProcesses(m.baseDir), []);
    });
  }

  it('ignores a second signal while closing', async () => {
    const m = await startMaster('app-close-hang', {}, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: 1500 } });
    await m.waitReady();
    m.kill('SIGTERM');
    await m.waitFor(/\[master\] master is killed by signal SIGTERM, closing/);
    await m.waitForMessages('app-closing', 1);
    m.kill('SIGINT');
    m.kill('SIGTERM');
    const exit = await m.waitExit(20000);
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    assert.strictEqual(m.lines(/\[master\] master is killed by signal/).length, 1, m.tail());
    assert.match(m.output, /\[master\] close done, exiting with code:0/);
  });

  it('EGG_APP_CLOSE_TIMEOUT: SIGKILLs app workers that do not exit in time', async () => {
    const m = await startMaster('app-close-hang', {}, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: 1000 } });
    await m.waitReady();
    const { agent, app } = m.workers();
    const t0 = Date.now();
    m.kill('SIGTERM');
    await m.waitForMessages('app-closing', 2); // beforeClose hooks are running (and hang)
    const exit = await m.waitExit(20000);
    const elapsed = Date.now() - t0;
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    assert(elapsed >= 900, `closed in ${elapsed}ms: the app close timeout was not waited for`);
    assert(elapsed < 4000, `closed in ${elapsed}ms, expected ~1s`);
    const idx = assertInOrder(m, [
      masterLine(m, 'send kill SIGTERM to app workers, will exit with code:0 after 1000ms'),
      masterLine(m, 'wait 1000ms'),
      masterLine(m, 'send kill SIGTERM to agent worker, will exit with code:0 after 5000ms'),
      masterLine(m, 'wait 5000ms'),
      masterLine(m, 'close done, exiting with code:0'),
    ]);
    const lines = m.output.split('\n');
    const waited = logTime(lines[idx[2]]) - logTime(lines[idx[0]]);
    assert(waited >= 900 && waited < 3000, `waited ${waited}ms for the app workers`);
    await waitDead([ ...agent, ...app ], 2000);
  });

  it('EGG_AGENT_CLOSE_TIMEOUT: SIGKILLs an agent that does not exit in time', async () => {
    const m = await startMaster('agent-close-hang', {}, { env: { ...PROD, EGG_AGENT_CLOSE_TIMEOUT: 1000 } });
    await m.waitReady();
    const { agent, app } = m.workers();
    const t0 = Date.now();
    m.kill('SIGTERM');
    await m.waitForMessages('agent-closing', 1);
    const exit = await m.waitExit(20000);
    const elapsed = Date.now() - t0;
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    assert(elapsed >= 900 && elapsed < 4000, `closed in ${elapsed}ms, expected ~1s`);
    assertInOrder(m, [
      masterLine(m, 'send kill SIGTERM to app workers, will exit with code:0 after 5000ms'),
      masterLine(m, 'wait 5000ms'),
      masterLine(m, 'send kill SIGTERM to agent worker, will exit with code:0 after 1000ms'),
      masterLine(m, 'wait 1000ms'),
      masterLine(m, 'close done, exiting with code:0'),
    ]);
    // egg-cluster 2.5 never SIGKILLs the agent (its `killed` check): ours must
    await waitDead([ ...agent, ...app ], REFERENCE ? 500 : 2000);
  });

  it('EGG_MASTER_CLOSE_TIMEOUT is the default for both', async () => {
    const m = await startMaster('app-close-hang', { workers: 1 }, { env: { ...PROD, EGG_MASTER_CLOSE_TIMEOUT: 1000 } });
    await m.waitReady();
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(20000)).code, 0, m.tail());
    assertInOrder(m, [
      masterLine(m, 'send kill SIGTERM to app workers, will exit with code:0 after 1000ms'),
      masterLine(m, 'send kill SIGTERM to agent worker, will exit with code:0 after 1000ms'),
    ]);
  });

  it('SIGKILLs a grandchild that ignores SIGTERM', async () => {
    const m = await startMaster('grandchild', {}, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: 1000 } });
    await m.waitReady();
    const gc = await m.waitForMessages('grandchild', 2);
    const pids = gc.map(msg => msg.data.pid);
    assert(pids.every(isAlive));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(20000)).code, 0, m.tail());
    await waitDead(pids, 2000);
  });

  it('master SIGKILLed: the agent and the app workers exit by themselves', async () => {
    const m = await startMaster('basic', {}, { env: PROD });
    await m.waitReady();
    const { agent, app } = m.workers();
    assert.strictEqual(agent.length + app.length, 3);
    m.kill('SIGKILL');
    const exit = await m.waitExit();
    assert.strictEqual(exit.signal, 'SIGKILL');
    await waitDead([ ...agent, ...app ], 10000);
  });

  it('pidFile: written at start (mkdir -p), removed at exit', async () => {
    const baseDir = copyFixture('basic');
    const pidFile = path.join(baseDir, 'run/nested/master.pid');
    const m = await startMaster('basic', { workers: 1, pidFile }, { env: PROD, baseDir });
    await m.waitReady();
    assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(m.pid));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0);
    assert(!fs.existsSync(pidFile), 'pid file removed at exit');
  });
});
