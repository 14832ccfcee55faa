'use strict';

const assert = require('assert');
const path = require('path');
const {
  TS, LOG_PREFIX, REFERENCE, ROOT, startMaster, get, collectWorkerPids, waitDead, findProcesses,
} = require('./helper');

describe('start', () => {
  for (const env of [ 'local', 'prod' ]) {
    it(`starts in ${env} env: egg-ready to the parent, 2 workers answer, egg-logger format`, async () => {
      const m = await startMaster('basic', {}, { env: env === 'prod' ? { EGG_SERVER_ENV: 'prod' } : {} });
      const port = m.options.port;
      const ready = await m.waitFor('egg-ready', 60000);
      assert.deepStrictEqual(ready, {
        action: 'egg-ready',
        from: 'master',
        to: 'parent',
        data: { port, address: `http://127.0.0.1:${port}`, protocol: 'http' },
      });
      // egg-ready reaches the parent only once
      assert.strictEqual(m.messages.filter(msg => msg.action === 'egg-ready').length, 1);

      // master log line, egg-logger console format, printed by the master itself
      const re = new RegExp(`${TS}INFO (\\d+) \\[master\\] egg started on http://127\\.0\\.0\\.1:${port} \\((\\d+)ms\\)$`, 'm');
      const started = await m.waitFor(re, 5000);
      assert.strictEqual(Number(started[1]), m.pid);
      assert.match(m.stdout, re, 'the started line goes to stdout');
      assert.doesNotMatch(m.stdout, /\x1b\[/, 'no colour when stdout is not a TTY');

      const res = await get(port, '/');
      assert.strictEqual(res.status, 200);
      assert.strictEqual(res.body, 'hi, egg');

      const workers = m.workers();
      assert.strictEqual(workers.agent.length, 1, `one agent: ${JSON.stringify(workers)}`);
      assert.strictEqual(workers.app.length, 2, `two app workers: ${JSON.stringify(workers)}`);
      const pids = await collectWorkerPids(port, 2);
      assert.deepStrictEqual([ ...pids ].sort(), workers.app.slice().sort());

      if (!REFERENCE) {
        // startCluster(options, callback): the callback without argument, the Promise with the address
        const cb = await m.waitFor('startCluster-callback', 5000);
        assert.deepStrictEqual(cb.data, { args: 0 });
        const resolved = await m.waitFor('startCluster-resolved', 5000);
        assert.deepStrictEqual(resolved.data, { port, address: `http://127.0.0.1:${port}`, protocol: 'http' });
      }

      m.kill('SIGTERM');
      const exit = await m.waitExit();
      assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
      await waitDead([ ...workers.agent, ...workers.app ], 5000);
      assert.deepStrictEqual(findProcesses(m.baseDir), []);
      assert.strictEqual(m.stderr, '', 'nothing on stderr');
    });
  }

  it('logs the start banner like egg-cluster', async () => {
    const m = await startMaster('basic', { workers: 1 }, { env: { EGG_SERVER_ENV: 'prod' } });
    await m.waitReady();
    const line = text => new RegExp(`${LOG_PREFIX}\\[master\\] ${text}`, 'm');
    assert.match(m.stdout, line('=================== egg start ====================='));
    assert.match(m.stdout, line(`node version ${process.version.replace(/\./g, '\\.')}$`));
    // ours says where egg was found and which protocol its workers speak
    const egg = path.join(ROOT, 'node_modules/egg').replace(/[.\\/]/g, '\\$&');
    assert.match(m.stdout, line(`egg version 3\\.\\d+\\.\\d+${REFERENCE ? '' : ` from ${egg}: egg 3 dialect \\(egg-cluster's protocol\\)`}$`));
    assert.match(m.stdout, line('start with options:$'));
    assert.match(m.stdout, line('start with env: isProduction: true, EGG_SERVER_ENV: prod, NODE_ENV: undefined$'));
    assert.match(m.stdout, line('agent_worker#1:\\d+ start with clusterPort:\\d+$'));
    assert.match(m.stdout, line('agent_worker#1:\\d+ started \\(\\d+ms\\)$'));
    assert.match(m.stdout, line(`app_worker#1:\\d+ started at ${m.options.port}, remain 0 \\(\\d+ms\\)$`));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0);
  });

  it('reusePort: starts and serves from every worker', async () => {
    // (node 20's net ignores `reusePort` (22.12+), so the listen still goes through
    // the master there; egg-cluster 2.5 then reports ready with address http://:::port)
    const m = await startMaster('basic', { reusePort: true }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    const info = await m.waitReady();
    assert.strictEqual(info.port, port);
    assert.strictEqual(info.protocol, 'http');
    assert(info.address.endsWith(`:${port}`), info.address);
    const pids = await collectWorkerPids(port, 2);
    assert.deepStrictEqual([ ...pids ].sort(), m.workers().app.sort());
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('sticky: the master hands connections to one worker per client IP', async () => {
    const m = await startMaster('basic', { sticky: true }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    const info = await m.waitReady();
    assert.deepStrictEqual(info, { port, address: `http://127.0.0.1:${port}`, protocol: 'http' });
    assert.match(m.output, new RegExp(`\\[master\\] egg started on http://127\\.0\\.0\\.1:${port} \\(\\d+ms\\) with STICKY MODE!$`, 'm'));
    const seen = new Set();
    for (let i = 0; i < 20; i++) {
      const res = await get(port, '/pid');
      assert.strictEqual(res.status, 200);
      seen.add(res.body);
    }
    assert.strictEqual(seen.size, 1, `one worker for 127.0.0.1, got ${[ ...seen ]}`);
    assert(m.workers().app.includes(Number([ ...seen ][0])));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  // lib/tiers.js: the master keeps its JS to V8's non-optimizing tiers once it is ready in process
  // mode (its first optimizing compile stepped its RSS 4.3 MiB in the long soak). The runner's
  // trace shows a loop optimized before startCluster (this Node's V8 does, and says so) and, once
  // ready, the same loop under another name not optimized.
  const traced = name => new RegExp(`^\\[(?:marking|compiling method|completed \\w+) \\S+ <JSFunction ${name} `, 'm');
  async function spin(more, fixture = 'basic', opts = { workers: 1 }) {
    const m = await startMaster(fixture, opts, { ...more, env: { EGG_CLUSTER_RS_TEST_TRACE_OPT: '1' } });
    await m.waitReady();
    assert.match(m.output, traced('controlSpin'), `the control loop is optimized before the start\n${m.tail()}`);
    m.send({ action: 'runner-spin' });
    await m.waitFor('runner-spun', 30000);
    await m.waitFor(/^runner: masterSpin done$/m, 5000);
    return m;
  }

  it("the master's JS tiers: a ready master (process mode) does not optimize its JS", async function() {
    if (REFERENCE) this.skip(); // egg-cluster's master is all JS and keeps V8's defaults
    const m = await spin();
    assert.doesNotMatch(m.output, traced('masterSpin'), m.tail());
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it("the master's JS tiers: a tier flag of the user's own wins", async function() {
    if (REFERENCE) this.skip();
    const m = await spin({ execArgv: [ '--turbofan' ] });
    assert.match(m.output, traced('masterSpin'), m.tail());
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it("the master's JS tiers: in worker_threads mode (the app's threads share the process) V8's defaults stay", async function() {
    if (REFERENCE) this.skip();
    const m = await spin({}, 'threads', { startMode: 'worker_threads', workers: 1 });
    assert.match(m.output, traced('masterSpin'), m.tail());
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});
