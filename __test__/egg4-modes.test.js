'use strict';

// egg 4 apps in the other connection modes (reusePort, sticky) and their faults after ready
// (an app worker, the agent): what @eggjs/cluster's users get from this master.

const assert = require('assert');
const path = require('path');
const { REFERENCE, ROOT, startMaster, get, getFreePort, collectWorkerPids, waitDead } = require('./helper');

const EGG4 = path.join(ROOT, 'node_modules/egg4');
const PROD = { EGG_SERVER_ENV: 'prod' };

const got = (who, action, where) => h => h.messages.filter(msg =>
  msg.action === `${who}-got` && msg.data.action === action && (!where || where(msg.data)));

async function start(opts = {}) {
  const m = await startMaster('egg4-app', { framework: EGG4, ...opts }, { env: PROD });
  await m.waitReady(90000);
  const hellos = await m.waitForMessages('app-hello', opts.workers || 2);
  const agent = await m.waitFor('agent-hello');
  return { m, appPids: hellos.map(msg => msg.data.pid).sort(), agentPid: agent.data.pid };
}

// listening TCP sockets on `port` in this network namespace
function listeners(port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  let n = 0;
  for (const file of [ '/proc/net/tcp', '/proc/net/tcp6' ]) {
    for (const line of require('fs').readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1] && `${cols[1].slice(cols[1].indexOf(':'))} ` === hex && cols[3] === '0A') n++;
    }
  }
  return n;
}

async function stop(m) {
  m.kill('SIGTERM');
  assert.strictEqual((await m.waitExit()).code, 0, m.tail());
}

(REFERENCE ? describe.skip : describe)('egg 4: connection modes and faults', () => {
  it('reusePort: every worker serves from its own socket; with debugPort, on that port too', async () => {
    const debugPort = await getFreePort();
    const { m, appPids } = await start({ reusePort: true, debugPort });
    const pids = await collectWorkerPids(m.options.port, 2);
    assert.deepStrictEqual([ ...pids ].sort(), appPids);
    // one SO_REUSEPORT listening socket per worker slot (a shared socket would be one)
    assert.strictEqual(listeners(m.options.port), 2);
    // @eggjs/cluster (up to 4.0.2-beta.9) listens the one server a second time there instead
    assert.deepStrictEqual([ ...await collectWorkerPids(debugPort, 2) ].sort(), appPids);
    assert.match(m.output, new RegExp(`\\[master\\] egg started debug port on http://127\\.0\\.0\\.1:${debugPort}$`, 'm'));
    await stop(m);
  });

  it('sticky: ready only with the sticky listener, one client address -> one worker', async () => {
    const { m, appPids } = await start({ sticky: true });
    assert.match(m.output, new RegExp(`\\[master\\] egg started on http://127\\.0\\.0\\.1:${m.options.port} \\(\\d+ms\\) with STICKY MODE!`));
    const seen = new Set();
    for (let i = 0; i < 10; i++) {
      const res = await get(m.options.port, '/pid');
      assert.strictEqual(res.status, 200, res.body);
      seen.add(Number(res.body));
    }
    assert.strictEqual(seen.size, 1);
    assert(appPids.includes([ ...seen ][0]));
    await stop(m);
  });

  it('an app worker killed after ready is replaced: app-worker-died, egg-pids to the agent, egg-ready to the new one', async () => {
    const { m, appPids, agentPid } = await start();
    const [ victim, survivor ] = appPids;
    process.kill(victim, 'SIGKILL');
    await m.waitFor('app-worker-died');
    const hello = await m.waitFor({ action: 'app-hello', where: msg => !appPids.includes(msg.data.pid) }, 60000);
    const fresh = hello.data.pid;
    assert.strictEqual(hello.data.ready.framework, EGG4);
    // the agent learns the new worker; the new worker learns the agent (by worker id)
    await m.waitFor(h => got('agent', 'egg-pids', d => d.data.includes(fresh) && d.data.includes(survivor))(h)[0]);
    const appPids2 = await m.waitFor(h => got('app', 'egg-pids', d => d.pid === fresh)(h)[0]);
    assert.deepStrictEqual(appPids2.data.data, [ agentPid ]);
    assert.match(m.output, new RegExp(`nodejs\\.AppWorkerDiedError: \\[master\\] app_worker#\\d+:${victim} died`));
    const pids = await collectWorkerPids(m.options.port, 2);
    assert.deepStrictEqual([ ...pids ].sort(), [ fresh, survivor ].sort());
    await stop(m);
  });

  it('the agent killed after ready is restarted: agent-worker-died, egg-ready to it, its pid to the apps', async () => {
    const { m, appPids, agentPid } = await start();
    process.kill(agentPid, 'SIGKILL');
    await m.waitFor('agent-worker-died');
    await waitDead([ agentPid ]);
    const hello = await m.waitFor({ action: 'agent-hello', where: msg => msg.data.pid !== agentPid }, 60000);
    const fresh = hello.data.pid;
    assert.match(m.output, /nodejs\.AgentWorkerDiedError: \[master\] agent_worker#1:\d+ died/);
    const told = await m.waitFor(h => { const l = got('app', 'egg-pids', d => d.data[0] === fresh)(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(told.map(msg => msg.data.pid).sort(), appPids);
    // ... and the new agent the apps
    await m.waitFor(h => got('agent', 'egg-pids', d => d.pid === fresh && d.data.length === 2)(h)[0]);
    await stop(m);
  });
});

(REFERENCE ? describe.skip : describe)('egg 4: cluster-client', () => {
  it('followers in every worker get what the leader (agent) published, over the master\'s clusterPort', async () => {
    // fixtures/apps/cluster-client (see cluster-client.test.js), on egg 4
    const m = await startMaster('cluster-client', { framework: EGG4 }, { env: PROD });
    await m.waitReady(90000);
    const { agent, app } = m.workers();
    assert.strictEqual(agent.length, 1);
    const data = await m.waitForMessages('registry-data', 2);
    assert.deepStrictEqual(data.map(msg => msg.data.pid).sort(), app.sort());
    for (const msg of data) assert.deepStrictEqual(msg.data.list, [ `leader:${agent[0]}` ]);
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200, res.body);
    assert.strictEqual(res.body, `leader:${agent[0]}`);
    await stop(m);
  });
});
