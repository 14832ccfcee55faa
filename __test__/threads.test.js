'use strict';

const assert = require('assert');
const { REFERENCE, startMaster, getFreePort, get, logTime } = require('./helper');
const { Load } = require('./load');

// startMode 'worker_threads': the agent and the app workers are threads of the master process.
// fixtures/apps/threads knows itself by its thread id and relays what it receives to the test
// process as { action: 'app-got' | 'agent-got', data: { action, data, tid } }.
describe('startMode: worker_threads', function() {
  before(function() {
    // egg-cluster 2.5's own thread workers are not this package's scripts
    if (REFERENCE) this.skip();
  });

  const got = (who, action, where) => h => h.messages.filter(msg =>
    msg.action === `${who}-got` && msg.data.action === action && (!where || where(msg.data)));
  const gotN = (who, action, n, where) => h => {
    const list = got(who, action, where)(h);
    return list.length >= n && list;
  };

  async function threads(opts, more) {
    return startMaster('threads', { startMode: 'worker_threads', workers: undefined, ...opts }, more);
  }

  it('starts the agent, then one app thread per port; each serves its port; the messenger works as with processes; SIGTERM closes them gracefully', async () => {
    const ports = [ await getFreePort(), await getFreePort() ];
    const m = await threads({ ports, port: undefined });
    const ready = await m.waitReady();
    assert.strictEqual(typeof ready.port, 'number');

    const agentTid = Number((await m.waitFor(/\[master\] agent_worker#1:(\d+) start with worker_threads/))[1]);
    // egg-cluster's agent-worker-threads fixture: the agent's workerId is its thread id
    await m.waitFor(new RegExp(`workerId: ${agentTid}\\b`));
    const t1 = Number((await m.waitFor(/\[master\] app_worker#1 \(tid:(\d+)\) start/))[1]);
    const t2 = Number((await m.waitFor(/\[master\] app_worker#2 \(tid:(\d+)\) start/))[1]);
    assert(m.output.indexOf('agent_worker#1:') < m.output.indexOf('app_worker#1 (tid:'), 'the agent starts first');
    assert.doesNotMatch(m.output, /start appWorker with args/, 'no process mode line');
    // threads, not processes: nothing but the master runs with this app's baseDir
    assert.deepStrictEqual(m.children(), []);

    // each thread serves the port of its slot
    assert.strictEqual((await get(ports[0])).body, String(t1));
    assert.strictEqual((await get(ports[1])).body, String(t2));

    const constructed = await m.waitForMessages('app-constructed', 2);
    assert(constructed.every(msg => msg.data.agentReady), JSON.stringify(constructed));
    const hellos = await m.waitForMessages('app-hello', 2);
    for (const { data } of hellos) {
      assert.strictEqual(data.isMainThread, false);
      assert.strictEqual(data.pid, m.pid, 'a thread shares the master\'s pid');
    }
    assert.deepStrictEqual(hellos.map(msg => msg.data.tid).sort(), [ t1, t2 ].sort());

    // app -> agent, agent -> app, broadcast
    const toAgent = await m.waitFor(gotN('agent', 'app-to-agent', 2));
    assert.deepStrictEqual(toAgent.map(msg => msg.data.data.tid).sort(), [ t1, t2 ].sort());
    const toApp = await m.waitFor(gotN('app', 'agent-to-app', 2));
    assert.deepStrictEqual(toApp.map(msg => msg.data.tid).sort(), [ t1, t2 ].sort());
    assert.deepStrictEqual(toApp[0].data.data, { from: agentTid });
    await m.waitFor(gotN('app', 'agent-broadcast', 2));
    await m.waitFor(gotN('agent', 'agent-broadcast', 1));

    // egg-pids: thread ids, as egg-cluster sends them in this mode
    await m.waitFor(h => got('agent', 'egg-pids', d => d.data.length === 2)(h)[0]);
    const agentPids = got('agent', 'egg-pids', d => d.data.length === 2)(m).pop();
    assert.deepStrictEqual(agentPids.data.data.sort(), [ t1, t2 ].sort());
    await m.waitFor(gotN('app', 'egg-pids', 2, d => d.data[0] === agentTid));

    // sendTo(thread id): agent -> one app thread, app -> app, app -> agent
    m.send({ action: 'cmd', to: 'agent', data: { name: 'send-to', target: t2, action: 'to-tid', data: 'from-agent' } });
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', tid: t2, target: t1, action: 'to-tid', data: 'from-app' } });
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', tid: t1, target: agentTid, action: 'to-tid', data: 'to-agent' } });
    const fromAgent = await m.waitFor(h => got('app', 'to-tid', d => d.data === 'from-agent')(h)[0]);
    assert.strictEqual(fromAgent.data.tid, t2);
    const fromApp = await m.waitFor(h => got('app', 'to-tid', d => d.data === 'from-app')(h)[0]);
    assert.strictEqual(fromApp.data.tid, t1);
    await m.waitFor(h => got('agent', 'to-tid', d => d.data === 'to-agent')(h)[0]);
    // parent -> app threads
    m.send({ action: 'parent-to-app', to: 'app', data: { n: 1 } });
    await m.waitFor(gotN('app', 'parent-to-app', 2));
    assert.strictEqual(got('app', 'to-tid')(m).length, 2, 'sendTo reached only its addressee');

    // the close asks each thread for its SIGTERM handlers: the apps close gracefully
    m.kill('SIGTERM');
    const closed = await m.waitForMessages('app-closed', 2);
    assert.deepStrictEqual(closed.map(msg => msg.data).sort(), [ t1, t2 ].sort());
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    assert.match(m.output, new RegExp(`\\[master\\] kill app_worker#1 \\(tid:${t1}\\) \\(worker_threads\\)`));
    assert.match(m.output, new RegExp(`\\[master\\] kill agent_worker#1 \\(tid:${agentTid}\\) \\(worker_threads\\)`));
    assert.match(m.output, /\[master\] close done, exiting with code:0/);
  });

  for (const reusePort of [ false, true ]) {
    it(`serves one port from every thread (${reusePort ? 'a SO_REUSEPORT socket per thread' : 'one shared socket'}), beyond egg-cluster`, async () => {
      const m = await threads({ workers: 3, reusePort });
      const { port } = await m.waitReady();
      const listening = m.lines(new RegExp(`app_worker#\\d+:\\d+ listening on .*"port":${port}\\b`));
      assert.strictEqual(listening.length, 3, m.tail());
      // concurrent requests on new connections until all three threads answered (bounded)
      const tids = new Set();
      for (let round = 0; round < 30 && tids.size < 3; round++) {
        const bodies = await Promise.all(Array.from({ length: 16 }, () => get(port).then(r => r.body)));
        for (const b of bodies) tids.add(Number(b));
      }
      assert.strictEqual(tids.size, 3, `threads that answered: ${[ ...tids ]}`);
      m.kill('SIGTERM');
      assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    });
  }

  it('an agent thread that fails its boot exits the master with code 1 (egg-cluster\'s lines)', async () => {
    const m = await threads({}, { env: { THREADS_FIXTURE_FAIL: 'agent' } });
    const { code } = await m.waitExit();
    assert.strictEqual(code, 1, m.tail());
    assert.match(m.stdout, /workerId: \d+/);
    assert.match(m.stderr, /worker_threads mock error/);
    assert.match(m.stderr, /\[agent_worker\] start error, exiting with code:1/);
    assert.match(m.stderr, /\[master\] agent_worker#1:\d+ start fail, exiting with code:1/);
    assert.match(m.stderr, /\[master\] exit with code:1/);
  });

  it('an agent thread that throws at load: its error event is logged (AgentWorkerError), the master exits with code 1', async () => {
    const m = await threads({}, { env: { THREADS_FIXTURE_FAIL: 'agent-throw' } });
    const { code } = await m.waitExit();
    assert.strictEqual(code, 1, m.tail());
    assert.match(m.stderr, /nodejs\.AgentWorkerError: worker_threads agent throws at load\n\s+at .*agent\.js/);
    assert.match(m.stderr, /\[master\] agent_worker#1:\d+ died \(code: 1, signal: null\)/);
    assert.match(m.stderr, /\[master\] agent_worker#1:\d+ start fail, exiting with code:1/);
  });

  it('an app thread that fails its boot exits the master with code 1', async () => {
    const m = await threads({}, { env: { THREADS_FIXTURE_FAIL: 'app' } });
    const { code } = await m.waitExit();
    assert.strictEqual(code, 1, m.tail());
    assert.match(m.stderr, /worker_threads mock app error/);
    assert.match(m.stderr, /\[app_worker\] start error, exiting with code:1/);
    assert.match(m.stderr, /\[master\] app_worker#1:\d+ start fail, exiting with code:1/);
    assert.match(m.stderr, /\[master\] exit with code:1/);
  });

  it('restarts an app thread that ends after the start (exit, uncaught exception) after 1 s, in any env', async () => {
    const port = await getFreePort();
    // env local: process mode would not refork (cfork); egg-cluster's threads restart anyway
    const m = await threads({ ports: [ port ], port: undefined, env: 'local' }, { env: { EGG_MASTER_LOGGER_LEVEL: 'DEBUG' } });
    await m.waitReady();
    const t1 = Number((await get(port)).body);

    assert.strictEqual((await get(port, '/exit')).body, String(t1));
    const died = await m.waitFor(new RegExp(`.*app_worker#1:${t1} died \\(code: 3, .*`));
    await m.waitFor('app-worker-died');
    const restart = await m.waitFor(new RegExp(`.*\\[master\\] app_worker#1 \\(tid:((?!${t1}\\b)\\d+)\\) start`));
    const t2 = Number(restart[1]);
    assert.notStrictEqual(t2, t1);
    assert(logTime(restart[0]) - logTime(died[0]) >= 1000, `restarted after ${logTime(restart[0]) - logTime(died[0])}ms`);
    await m.waitFor(new RegExp(`app_worker#1:${t2} started at ${port}`));
    assert.strictEqual((await get(port)).body, String(t2));

    // an uncaught exception: egg's graceful logs it and disconnects, the thread closes as a
    // process would on the master's SIGTERM, and is restarted
    await get(port, '/throw');
    await m.waitFor(new RegExp(`nodejs\\.Error: uncaught in thread ${t2}`));
    await m.waitFor(new RegExp(`app_worker#1:${t2} died \\(code: 0, `));
    const t3 = await m.waitFor(h => h.lines(/\[master\] app_worker#1 \(tid:\d+\) start/)
      .map(line => Number(line.match(/tid:(\d+)/)[1])).find(tid => tid > t2));
    await m.waitFor(new RegExp(`app_worker#1:${t3} started at ${port}`));
    assert.strictEqual((await get(port)).body, String(t3));
    assert.deepStrictEqual(m.children(), []);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('SIGUSR2 replaces every app thread under load, one at a time, without a failed request (beyond egg-cluster)', async () => {
    const m = await threads({ workers: 2, env: 'prod' });
    const { port } = await m.waitReady();
    const before = m.lines(/\[master\] app_worker#\d+ \(tid:\d+\) start/).map(line => Number(line.match(/tid:(\d+)/)[1]));
    assert.strictEqual(before.length, 2);
    const load = new Load(port);
    try {
      await load.until(r => before.every(tid => r.some(x => x.pid === tid)));
      const mark = m.messages.length;
      m.kill('SIGUSR2');
      const done = await m.waitFor(h => h.messages.slice(mark).find(msg => msg && msg.action === 'reload-done'), 90000);
      assert.strictEqual(done.data.ok, true, `${JSON.stringify(done)}\n${m.tail()}`);
      const after = done.data.replaced.map(pair => pair[1]);
      assert.deepStrictEqual(done.data.replaced.map(pair => pair[0]).sort(), before.sort());
      // the new threads serve
      await load.until(r => after.every(tid => r.some(x => x.pid === tid)));
      await load.stop();
      load.assertAllOk(m);
      for (const tid of before) assert.match(m.output, new RegExp(`app_worker#\\d+:${tid} retired \\(code: 0, signal: null\\)`));
    } finally {
      await load.stop();
    }
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('sticky: the master hands each connection to a thread (egg-cluster cannot pass a socket to one)', async () => {
    const m = await threads({ workers: 2, sticky: true });
    const { port } = await m.waitReady();
    assert.match(m.output, /with STICKY MODE!/);
    const bodies = [];
    for (let i = 0; i < 10; i++) bodies.push((await get(port)).body);
    // one client address: one thread
    assert.strictEqual(new Set(bodies).size, 1, bodies.join());
    assert.match(m.output, new RegExp(`app_worker#\\d+:${bodies[0]} listening`));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('egg 4: an egg 4 app runs in threads too (@eggjs/cluster 3\'s lines)', async () => {
    const m = await startMaster('egg4-app', { startMode: 'worker_threads', workers: 2 });
    const { port } = await m.waitReady();
    assert.match(m.output, /egg start 🥚🥚🥚🥚/);
    assert.match(m.output, /\[master\] agent_worker#1:\d+ start with worker_threads/);
    assert.match(m.output, /\[master\] app_worker#2 \(tid:\d+\) start/);
    const body = JSON.parse((await get(port)).body);
    assert.strictEqual(body.pid, m.pid, 'served by a thread of the master');
    assert.match(body.egg, /egg4/);
    assert.deepStrictEqual(m.children(), []);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});
