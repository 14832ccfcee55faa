'use strict';

// Operations: the status snapshot (JS API, cluster-status message, CLI), the metrics endpoint
// (/metrics, /healthz, /readyz), systemd's notify protocol and socket activation.

const assert = require('assert');
const fs = require('fs');
const net = require('net');
const path = require('path');
const childProcess = require('child_process');
const {
  ROOT, startMaster, getFreePort, runScript, get, copyFixture, isAlive, waitDead, killAll, waitUntil, notifyListener, boundSocket,
} = require('./helper');

const CLI = path.join(ROOT, 'bin/egg-cluster-rs.js');
const RUNNER = path.join(__dirname, 'fixtures/start.js');
const PROD = { EGG_SERVER_ENV: 'prod' };

/** VmRSS of a live process, bytes */
function procRss(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]) * 1024;
}

/**
 * A strict parser of the Prometheus/OpenMetrics text format: every sample belongs to a family
 * declared by `# TYPE` before it, counters' samples end in `_total` (histograms' in `_bucket`,
 * `_count`, `_sum`), labels are `k="v"` with
 * escapes, values are numbers, the text ends with `# EOF`. Throws on anything else.
 * @param {string} text -
 * @return {{types: Object, samples: Array<{name: string, labels: Object, value: number}>}} -
 */
function parseMetrics(text) {
  const types = {};
  const samples = [];
  const lines = text.split('\n');
  assert.strictEqual(lines.pop(), '', 'ends with a newline');
  assert.strictEqual(lines.pop(), '# EOF', 'ends with # EOF');
  for (const line of lines) {
    let m;
    if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|info|stateset|unknown)$/))) {
      assert(!(m[1] in types), `TYPE twice: ${m[1]}`);
      types[m[1]] = m[2];
      continue;
    }
    if (/^# (HELP|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    assert(m, `not a sample line: ${JSON.stringify(line)}`);
    const [ , name, , labelText, valueText ] = m;
    const labels = {};
    if (labelText) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let pos = 0;
      while (pos < labelText.length) {
        re.lastIndex = pos;
        const l = re.exec(labelText);
        assert(l, `bad labels: ${labelText}`);
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        pos = re.lastIndex;
      }
    }
    const value = Number(valueText);
    assert(!Number.isNaN(value) || valueText === 'NaN', `bad value: ${line}`);
    const suffixes = { counter: [ '_total' ], histogram: [ '_bucket', '_count', '_sum' ], summary: [ '_count', '_sum' ] };
    const family = Object.keys(types).find(f => name === f || (suffixes[types[f]] || []).some(x => name === `${f}${x}`));
    assert(family, `sample before its TYPE: ${name}`);
    if (types[family] === 'counter') assert(name.endsWith('_total'), `counter sample without _total: ${name}`);
    samples.push({ name, labels, value });
  }
  return { types, samples };
}

function sample(parsed, name, labels = {}) {
  const s = parsed.samples.find(x => x.name === name && Object.entries(labels).every(([ k, v ]) => x.labels[k] === v));
  return s && s.value;
}

/**
 * Sends raw bytes to host:port and resolves with what came back until the server closed.
 * @param {number} port -
 * @param {string|Buffer} bytes -
 * @param {Object} [opts] - { end: half-close after writing }
 * @return {Promise<{data: string, ms: number}>} -
 */
function raw(port, bytes, opts = {}) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const conn = net.connect(port, '127.0.0.1');
    let data = '';
    conn.setEncoding('latin1');
    conn.on('connect', () => {
      if (bytes) conn.write(bytes);
      if (opts.end) conn.end();
    });
    conn.on('data', chunk => { data += chunk; });
    conn.on('close', () => resolve({ data, ms: Date.now() - start }));
    conn.on('error', err => (err.code === 'ECONNRESET' ? resolve({ data, ms: Date.now() - start, reset: true }) : reject(err)));
    conn.setTimeout(20000, () => conn.destroy(new Error('raw: no close within 20s')));
  });
}

async function scrape(port) {
  const res = await get(port, '/metrics');
  assert.strictEqual(res.status, 200, res.body);
  assert.match(res.headers['content-type'], /^application\/openmetrics-text; version=1\.0\.0/);
  assert.strictEqual(res.headers.connection, 'close');
  return parseMetrics(res.body);
}

describe('operations', () => {
  it('status through promise.status(), cluster-status messages and the CLI; a SIGKILLed worker shows a restart', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('messenger', { metrics: { port: metricsPort } }, { env: PROD });
    await m.waitReady();
    const appPids = (await m.waitForMessages('app-hello', 2)).map(msg => msg.data).sort();
    const agentPid = (await m.waitFor('agent-hello')).data;

    // 1. the JS API
    m.send({ action: 'runner-status' });
    const snap = (await m.waitFor('runner-status')).data;
    assert.strictEqual(snap.master.pid, m.pid);
    assert.strictEqual(snap.master.phase, 'ready');
    assert.strictEqual(snap.master.ready, true);
    assert.strictEqual(snap.master.healthy, true);
    assert.deepStrictEqual([ snap.master.workers, snap.master.serving, snap.master.reforks ], [ 2, 2, 0 ]);
    assert(snap.master.startedAt >= m.startedAt && snap.master.startedAt <= Date.now(), JSON.stringify(snap.master));
    assert(snap.master.uptimeMs >= 0 && snap.master.uptimeMs <= Date.now() - m.startedAt, JSON.stringify(snap.master));
    assert.deepStrictEqual(snap.children.map(c => [ c.role, c.state ]), [[ 'agent', 'serving' ], [ 'app', 'serving' ], [ 'app', 'serving' ]]);
    assert.strictEqual(snap.children[0].pid, agentPid);
    assert.deepStrictEqual(snap.children.slice(1).map(c => c.pid).sort(), appPids);
    assert.deepStrictEqual(snap.children.slice(1).map(c => c.slot).sort(), [ 0, 1 ]);
    for (const c of [ snap.master, ...snap.children ]) {
      const rss = procRss(c.pid);
      // sampled a moment apart: same order of magnitude
      assert(c.rss > rss / 2 && c.rss < rss * 2, `${c.pid}: rss ${c.rss} vs /proc ${rss}`);
      assert(typeof c.cpu === 'number' && c.cpu >= 0, JSON.stringify(c));
    }
    for (const c of snap.children) {
      assert.strictEqual(c.restarts, 0);
      assert.strictEqual(c.lastExit, null);
      assert(c.startedAt >= m.startedAt && c.startedAt <= Date.now());
      // every worker relayed its hello and app-to-agent to the parent / agent
      assert(c.messagesRelayed >= 1 && c.bytesRelayed > c.messagesRelayed, JSON.stringify(c));
    }

    // 2. cluster-status from an app worker (answered to that worker) and from the parent
    m.send({ action: 'cmd', to: 'app', data: { name: 'status', pid: appPids[0] } });
    const viaApp = await m.waitFor({ action: 'app-got', where: msg => msg.data.action === 'cluster-status' });
    assert.strictEqual(viaApp.data.pid, appPids[0]);
    assert.strictEqual(viaApp.data.data.master.pid, m.pid);
    assert.strictEqual(viaApp.data.data.children.length, 3);
    m.send({ to: 'master', action: 'cluster-status' });
    const viaParent = await m.waitFor('cluster-status');
    assert.strictEqual(viaParent.from, 'master');
    assert.strictEqual(viaParent.data.master.phase, 'ready');

    // 3. the CLI, over the control socket (same user)
    const cli = runScript(CLI, [ 'status', `--pid=${m.pid}`, '--json' ], { marker: m.baseDir, home: m.baseDir });
    assert.deepStrictEqual(await cli.waitExit(20000), { code: 0, signal: null }, cli.tail());
    const viaCli = JSON.parse(cli.stdout);
    assert.strictEqual(viaCli.master.pid, m.pid);
    assert.deepStrictEqual(viaCli.children.map(c => c.pid).sort(), [ agentPid, ...appPids ].sort());
    const table = runScript(CLI, [ 'status', `--pid=${m.pid}` ], { marker: m.baseDir, home: m.baseDir });
    assert.deepStrictEqual(await table.waitExit(20000), { code: 0, signal: null }, table.tail());
    assert.match(table.stdout, new RegExp(`^master ${m.pid}: ready, up \\d+s, 2/2 app workers serving`));
    assert.match(table.stdout, /^ROLE\s+ID\s+PID\s+SLOT\s+STATE/m);
    assert.match(table.stdout, new RegExp(`^app\\s+\\d+\\s+${appPids[0]}\\s+\\d\\s+serving`, 'm'));

    // a SIGKILLed worker: replaced, its slot shows one restart and the signal
    const victim = snap.children.find(c => c.pid === appPids[0]);
    process.kill(victim.pid, 'SIGKILL');
    const after = await waitUntil(async () => {
      m.send({ action: 'runner-status' });
      const n = m.messages.filter(msg => msg.action === 'runner-status').length;
      const s = (await m.waitFor(h => { const l = h.messages.filter(msg => msg.action === 'runner-status'); return l.length > n && l[l.length - 1]; })).data;
      return s.master.serving === 2 && !s.children.some(c => c.pid === victim.pid) && s;
    }, 30000, 'the replacement to serve');
    const replacement = after.children.find(c => c.role === 'app' && c.slot === victim.slot);
    assert.strictEqual(replacement.restarts, 1);
    assert.strictEqual(replacement.lastExit.pid, victim.pid);
    assert.strictEqual(replacement.lastExit.signal, 'SIGKILL');
    assert.strictEqual(replacement.lastExit.code, null);
    assert.strictEqual(after.master.reforks, 1);
    assert.strictEqual(after.children.find(c => c.role === 'app' && c.slot !== victim.slot).restarts, 0);
    const metrics = await scrape(metricsPort);
    assert.strictEqual(sample(metrics, 'egg_cluster_reforks_total'), 1);
    assert.strictEqual(sample(metrics, 'egg_cluster_slot_restarts_total', { role: 'app', id: String(replacement.id) }), 1);

    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('status just after boot: a worker\'s event-loop lag shows from a whole heartbeat after it serves, never its boot', async () => {
    const m = await startMaster('boot-block', {}, { env: PROD });
    // every lag a serving app worker shows, polled from the start until both show one
    const shown = [];
    await waitUntil(async () => {
      m.send({ action: 'runner-status' });
      const n = m.messages.filter(msg => msg.action === 'runner-status').length;
      const s = (await m.waitFor(h => { const l = h.messages.filter(msg => msg.action === 'runner-status'); return l.length > n && l[l.length - 1]; })).data;
      const apps = s.children.filter(c => c.role === 'app');
      for (const c of apps) if (c.state === 'serving' && c.lagMs !== null) shown.push(c.lagMs);
      return apps.length === 2 && apps.every(c => c.state === 'serving' && c.lagMs !== null);
    }, 90000, 'both app workers to serve and show their lag');
    // the 5 s the boot blocked each worker's loop (boot-block/app.js) are not lag
    assert(shown.every(ms => ms < 2500), `lags shown: ${shown}`);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('/metrics is valid Prometheus text and its relay counters move; /healthz, /readyz; bad requests never hurt', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('messenger', { metrics: { port: metricsPort } });
    // where it is served, as a product line
    await m.waitFor(new RegExp(`INFO \\d+ \\[master\\] serving /metrics, /healthz and /readyz on http://127\\.0\\.0\\.1:${metricsPort}$`, 'm'));
    await m.waitReady();
    await m.waitForMessages('app-hello', 2);
    await m.waitFor(h => h.messages.filter(msg => msg.action === 'agent-got' && msg.data.action === 'app-to-agent').length >= 2);

    const before = await scrape(metricsPort);
    assert.strictEqual(before.types.egg_cluster_messages_relayed, 'counter');
    assert.strictEqual(before.types.egg_cluster_process_resident_memory_bytes, 'gauge');
    assert.strictEqual(sample(before, 'egg_cluster_phase', { phase: 'ready' }), 1);
    assert.strictEqual(sample(before, 'egg_cluster_phase', { phase: 'closing' }), 0);
    assert.strictEqual(sample(before, 'egg_cluster_workers_serving'), 2);
    assert.strictEqual(sample(before, 'egg_cluster_ready'), 1);
    const rssMaster = sample(before, 'egg_cluster_process_resident_memory_bytes', { role: 'master', id: '0' });
    assert(rssMaster > procRss(m.pid) / 2 && rssMaster < procRss(m.pid) * 2, `${rssMaster}`);
    const apps = [ '1', '2' ];
    const count = (p, id) => sample(p, 'egg_cluster_messages_relayed_total', { role: 'app', id });
    const bytes = (p, id) => sample(p, 'egg_cluster_bytes_relayed_total', { role: 'app', id });
    for (const id of apps) assert(count(before, id) >= 2, `app ${id}: ${count(before, id)}`);

    // 5 relays by every app worker (process.send('foo') goes to the agent)
    for (let i = 0; i < 5; i++) m.send({ action: 'cmd', to: 'app', data: { name: 'send-string' } });
    await m.waitFor(h => h.messages.filter(msg => msg.action === 'agent-got' && msg.data.action === 'foo').length >= 10);
    const after = await scrape(metricsPort);
    for (const id of apps) {
      // each app also relayed its 5 app-got reports of 'cmd'? no: the cmd is addressed by
      // name only; it sends 'foo' (1 message) per cmd
      assert(count(after, id) >= count(before, id) + 5, `app ${id}: ${count(before, id)} -> ${count(after, id)}`);
      assert(bytes(after, id) >= bytes(before, id) + 5 * '"foo"'.length, `app ${id} bytes`);
    }
    const total = p => sample(p, 'egg_cluster_messages_relayed_total', { role: 'master' });
    assert(total(after) >= total(before) + 10 + 5, `${total(before)} -> ${total(after)}`);

    assert.deepStrictEqual(await get(metricsPort, '/healthz').then(r => [ r.status, r.headers.connection ]), [ 200, 'close' ]);
    const ready = await get(metricsPort, '/readyz');
    assert.strictEqual(ready.status, 200);
    assert.match(ready.body, /^ok: ready for traffic \(phase ready, 2\/2 app workers serving\)/);

    // hostile or broken clients
    const status = r => (r.data.match(/^HTTP\/1\.1 (\d{3}) /) || [])[1];
    assert.strictEqual(status(await raw(metricsPort, 'GET /nope HTTP/1.1\r\n\r\n')), '404');
    assert.strictEqual(status(await raw(metricsPort, 'GET /../metrics HTTP/1.1\r\n\r\n')), '404');
    assert.strictEqual(status(await raw(metricsPort, 'POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello')), '405');
    assert.strictEqual(status(await raw(metricsPort, 'garbage\r\n\r\n')), '400');
    assert.strictEqual(status(await raw(metricsPort, Buffer.from([ 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a ]))), '400');
    const huge = await raw(metricsPort, `GET /metrics HTTP/1.1\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    assert(status(huge) === '431' || huge.reset, huge.data.slice(0, 100));
    const headOnly = await raw(metricsPort, 'HEAD /readyz HTTP/1.0\r\n\r\n');
    assert.match(headOnly.data, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n$/);
    // half a request, then nothing: closed by the server after its 5 s timeout
    const slow = await raw(metricsPort, 'GET /metrics HTTP/1.1\r\n');
    assert.strictEqual(slow.data, '');
    assert(slow.ms >= 4500 && slow.ms < 15000, `${slow.ms}ms`);
    // a client that closes at once
    await raw(metricsPort, '', { end: true });
    // many at once
    await Promise.all(Array.from({ length: 50 }, () => get(metricsPort, '/metrics').then(r => assert.strictEqual(r.status, 200))));

    assert(isAlive(m.pid));
    assert.strictEqual((await scrape(metricsPort)).samples.length > 10, true);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('a bad metrics option fails fast naming it; a metrics port in use fails the start', async () => {
    const bad = await startMaster('basic', { metrics: { port: 'x' } });
    assert.strictEqual((await bad.waitExit()).code, 1);
    assert.match(bad.stderr, /options\.metrics\.port should be an integer between 0 and 65535, got "x"/);
    const host = await startMaster('basic', { metrics: { port: 1, host: 'example.com' } });
    assert.strictEqual((await host.waitExit()).code, 1);
    assert.match(host.stderr, /options\.metrics\.host should be an IP address, got "example\.com"/);
    const busy = net.createServer();
    await new Promise(resolve => busy.listen(0, '127.0.0.1', resolve));
    try {
      const inUse = await startMaster('basic', { metrics: { port: busy.address().port } });
      assert.strictEqual((await inUse.waitExit()).code, 1);
      assert.match(inUse.stderr, /listen on options\.metrics 127\.0\.0\.1:\d+/);
    } finally {
      busy.close();
    }
  });

  it('systemd notify: READY=1 with MAINPID, WATCHDOG=1, then STOPPING=1 and /readyz 503 during the close', async () => {
    const notify = await notifyListener();
    const { datagrams, path: sockPath } = notify;
    try {
      const metricsPort = await getFreePort();
      const m = await startMaster('app-close-hang', { metrics: { port: metricsPort } }, {
        env: { NOTIFY_SOCKET: sockPath, WATCHDOG_USEC: '200000', EGG_APP_CLOSE_TIMEOUT: '3000', ...PROD },
      });
      await m.waitReady();
      const ready = await waitUntil(() => datagrams.find(d => d.startsWith('READY=1')), 10000, 'READY=1');
      assert.strictEqual(ready, `READY=1\nMAINPID=${m.pid}\nSTATUS=2/2 app workers serving`);
      await waitUntil(() => datagrams.filter(d => d === 'WATCHDOG=1').length >= 3, 10000, 'WATCHDOG=1 pings');
      assert.strictEqual((await get(metricsPort, '/readyz')).status, 200);
      // the workers' environment has none of systemd's variables
      for (const pid of m.workers().app) {
        const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        assert(!env.some(e => /^(NOTIFY_SOCKET|WATCHDOG_USEC)=/.test(e)), `${pid}: ${env.filter(e => /NOTIFY|WATCHDOG/.test(e))}`);
      }

      m.kill('SIGTERM');
      await m.waitFor('app-closing');
      const stopping = await waitUntil(() => datagrams.find(d => d.startsWith('STOPPING=1')), 10000, 'STOPPING=1');
      assert.strictEqual(stopping, 'STOPPING=1\nSTATUS=closing');
      assert(datagrams.indexOf(stopping) > datagrams.indexOf(ready));
      // the workers hang in beforeClose for the 3 s close timeout: the master still answers
      const during = await get(metricsPort, '/readyz');
      assert.strictEqual(during.status, 503, during.body);
      assert.match(during.body, /^not ok: .*phase closing/);
      assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
      assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
    } finally {
      notify.close();
    }
  });

  it('socket activation: the master serves on the inherited socket and restarts on it without refusing a connection', async () => {
    const baseDir = copyFixture('basic');
    // the master makes it listen, and it keeps listening here between masters, as systemd's does
    const { handle, port } = boundSocket();
    const options = JSON.stringify({ baseDir, workers: 2, port });

    const masters = [];
    function startActivated() {
      const env = { ...process.env, HOME: baseDir, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', EGG_SERVER_ENV: 'prod' };
      for (const k of Object.keys(env)) if (/^EGG_CLUSTER_RS_(?!TEST)|^NODE_OPTIONS$/.test(k)) delete env[k];
      const child = childProcess.spawn('sh', [ '-c', 'export LISTEN_PID=$$; exec "$0" "$@"', process.execPath, RUNNER, options ], {
        cwd: ROOT, env, stdio: [ 'ignore', 'pipe', 'pipe', handle ],
      });
      const h = { child, pid: child.pid, out: '', exited: null };
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', c => { h.out += c; });
      child.stderr.on('data', c => { h.out += c; });
      child.on('exit', (code, signal) => { h.exited = { code, signal }; });
      masters.push(h);
      return h;
    }
    const started = h => waitUntil(() => {
      if (h.exited) throw new Error(`master exited ${JSON.stringify(h.exited)}\n${h.out}`);
      return /\[master\] egg started on http:\/\/127\.0\.0\.1:\d+/.test(h.out);
    }, 60000, 'egg started');

    try {
      const first = startActivated();
      await started(first);
      assert.match(first.out, new RegExp(`egg started on http://127\\.0\\.0\\.1:${port} `));
      const res = await get(port, '/');
      assert.strictEqual(res.status, 200);
      // the workers did not inherit fd 3 as the socket (their fd 3 is their channel) nor the variables
      const workerPids = fs.readdirSync('/proc').filter(p => /^\d+$/.test(p)).filter(p => {
        try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(baseDir) && Number(p) !== first.pid; } catch (_) { return false; }
      });
      assert(workerPids.length >= 3, workerPids);
      for (const p of workerPids) {
        const env = fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
        assert(!env.some(e => /^LISTEN_(FDS|PID|FDNAMES)=/.test(e)), `${p} inherited LISTEN_*`);
        assert.match(fs.readlinkSync(`/proc/${p}/fd/3`), /^socket:/);
      }
      const stats = { ok: 0, refused: 0, other: [] };
      let stop = false;
      const loop = (async () => {
        for (let i = 0; i < 5000 && !stop; i++) {
          try {
            const r = await get(port, '/', { timeout: 60000 });
            if (r.status === 200) stats.ok++;
            else stats.other.push(r.status);
          } catch (err) {
            if (err.code === 'ECONNREFUSED') stats.refused++;
            else stats.other.push(err.code || err.message);
          }
        }
      })();
      await waitUntil(() => stats.ok >= 20, 30000, 'requests before the restart');
      process.kill(first.pid, 'SIGTERM');
      await waitUntil(() => first.exited, 30000, 'the first master to exit');
      assert.deepStrictEqual(first.exited, { code: 0, signal: null }, first.out);
      const okBefore = stats.ok;
      const second = startActivated();
      await started(second);
      await waitUntil(() => stats.ok >= okBefore + 20, 60000, 'requests after the restart');
      stop = true;
      await loop;
      assert.strictEqual(stats.refused, 0, JSON.stringify(stats));
      assert.deepStrictEqual(stats.other, []);
      process.kill(second.pid, 'SIGTERM');
      await waitUntil(() => second.exited, 30000, 'the second master to exit');
      assert.deepStrictEqual(second.exited, { code: 0, signal: null }, second.out);
    } finally {
      for (const h of masters) if (!h.exited) h.child.kill('SIGKILL');
      await killAll(baseDir);
      await waitDead([]);
      handle.close();
    }
  });
});
