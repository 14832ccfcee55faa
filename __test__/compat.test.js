'use strict';

// egg-cluster 2.x behaviours: a SIGKILLed master (and the watchdog beyond it), a debugged
// master whose worker a debugger kills, the `require` option resolved from the app.

const assert = require('assert');
const fs = require('fs');
const { execSync } = require('child_process');
const {
  REFERENCE, startMaster, getFreePort, get, waitDead, isAlive,
} = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };
const WORKER_LOGS = { EGG_APP_WORKER_LOGGER_LEVEL: 'INFO', EGG_AGENT_WORKER_LOGGER_LEVEL: 'INFO' };

// Sockets listening on `port`, from /proc/net/tcp{,6} (state 0A): what a leftover worker would
// keep. (Not a trial bind: on a busy machine another process's connection may be using the port
// as its ephemeral source port, which fails a bind without anyone listening.)
function listenersOn(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const out = [];
  for (const file of [ '/proc/net/tcp', '/proc/net/tcp6' ]) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (_) {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[1].endsWith(`:${hex}`) && f[3] === '0A') out.push(line.trim());
    }
  }
  return out;
}

describe('master SIGKILLed', () => {
  it('the workers leave through the disconnect path (not a SIGTERM)', async () => {
    const m = await startMaster('basic', {}, { env: { ...PROD, ...WORKER_LOGS } });
    await m.waitReady();
    const { agent, app } = m.workers();
    assert.strictEqual(agent.length + app.length, 3);
    m.kill('SIGKILL');
    await m.waitExit();
    // the workers still write to the pipes the master had: their lines arrive here
    await m.waitFor(h => h.lines(/\[app_worker\] receive disconnect event in cluster fork mode, exitedAfterDisconnect:false$/).length === 2
      && h.lines(/\[agent_worker\] receive disconnect event on child_process fork mode, exiting with code:110$/).length === 1, 20000);
    await waitDead([ ...agent, ...app ], 10000);
    await m.waitFor(h => h.closed, 10000);
    assert.deepStrictEqual(m.lines(/receive signal SIGTERM/), [], m.tail());
    assert.deepStrictEqual(m.lines(/\[agent_worker\] exit with code:110$/).length, 1, m.tail());
  });

  it('an app worker stuck in a CPU loop is SIGKILLed after the 1 s app grace, not the close timeout; the port is free', async function() {
    if (REFERENCE) this.skip(); // egg-cluster's stuck worker lives on and keeps the port
    // A long close timeout: the stuck worker must not get it (an app worker leaves on the
    // disconnect at once, without close hooks; src/process/watchdog.rs APP_GRACE).
    const CLOSE = 6000;
    const APP_GRACE = 1000;
    const port = await getFreePort();
    const m = await startMaster('busy', { workers: 1, port }, {
      env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: CLOSE, EGG_AGENT_CLOSE_TIMEOUT: 1000 },
    });
    await m.waitReady();
    const { agent } = m.workers();
    const res = await get(port, '/busy?ms=60000');
    assert.strictEqual(res.status, 200);
    const stuck = Number(res.body);
    assert(isAlive(stuck));
    m.kill('SIGKILL');
    const killedAt = Date.now();
    // (not waitExit: the stuck worker holds the master's stdout)
    await m.waitFor(h => h.exited, 10000);
    // the agent leaves by itself; the stuck worker cannot
    await waitDead(agent, CLOSE);
    await waitDead([ stuck ], CLOSE);
    const took = Date.now() - killedAt;
    assert(took >= APP_GRACE - 200, `killed after ${took}ms, before the app grace`);
    // (the watchdog counts 100 ms sleeps: slower on a loaded machine, never near the close timeout)
    assert(took < CLOSE - 2000, `killed after ${took}ms: the close timeout, not the app grace`);
    const listeners = listenersOn(port);
    // who holds it, if anyone does
    assert.deepStrictEqual(listeners, [], listeners.length ? execSync(`ss -tlnp | grep :${port} || true`).toString() : '');
  });
});

describe('debugging', () => {
  it('an app worker SIGKILLed under a debugged master: "worker kill by debugger", the master closes', async function() {
    const m = await startMaster('basic', {}, {
      env: { ...PROD, EGG_AGENT_DEBUG_PORT: await getFreePort(), EGG_MASTER_CLOSE_TIMEOUT: 2000 },
      execArgv: [ '--inspect=127.0.0.1:0' ],
    });
    await m.waitReady();
    const { app } = m.workers();
    assert.strictEqual(app.length, 2);
    process.kill(app[0], 'SIGKILL');
    await m.waitFor(new RegExp(`ERROR ${m.pid} \\[master\\] app_worker#\\d+:${app[0]} died \\(code: null, signal: SIGKILL, suicide: false, state: dead\\), current workers: `), 20000);
    await m.waitFor(new RegExp(`ERROR ${m.pid} \\[master\\] worker kill by debugger, exiting\\.\\.\\.$`, 'm'), 20000);
    const exit = await m.waitExit(30000);
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    assert.match(m.output, /\[master\] send kill SIGTERM to app workers/);
    assert.doesNotMatch(m.output, /AppWorkerDiedError/);
    // a replacement forked at the disconnect (as cfork does) was closed with the rest
    await waitDead(app, 10000);
    await m.waitFor(h => h.children().length === 0, 10000);
  });
});

describe('require option', () => {
  it('resolves from baseDir first: a module only in the app\'s node_modules loads in the agent and the app workers', async () => {
    const m = await startMaster('require-hook', { workers: 1, require: 'my-hook' }, { env: PROD });
    await m.waitReady();
    const reports = await m.waitForMessages('hook-report', 2);
    const byRole = Object.fromEntries(reports.map(r => [ r.data.role, r.data.from ]));
    const expected = require('path').join(m.baseDir, 'node_modules/my-hook/index.js');
    assert.deepStrictEqual(byRole, { agent: expected, app: expected });
  });
});
