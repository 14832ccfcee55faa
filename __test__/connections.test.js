'use strict';

// How the workers are reached: https (options and app config), debugPort beside an https or a
// plain HTTP port, unix socket, listen hostname, a port in use, an app listening on
// another port, sticky sessions (spread, failover, idle clients).

const assert = require('assert');
const fs = require('fs');
const net = require('net');
const path = require('path');
const {
  TS, FIXTURES, REFERENCE, startMaster, getFreePort, get, request, waitDead, findProcesses,
} = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };
const KEY = path.join(FIXTURES, 'certs/server.key');
const CERT = path.join(FIXTURES, 'certs/server.crt');
const CA = fs.readFileSync(CERT);

function byNumber(a, b) {
  return a - b;
}

function esc(s) {
  return String(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// a master line: "<ts> <level> <master pid> [master] <text>" (text is a regexp source)
function masterLine(m, text, level = 'INFO') {
  return new RegExp(`${TS}${level} ${m.pid} \\[master\\] ${text}$`, 'm');
}

/**
 * Requests (a new connection each) until `count` distinct pids answered 200
 * @param {Object} opts - request() options; path defaults to /pid
 * @param {number} count -
 * @param {number} [max] -
 * @return {Promise<number[]>} the pids, sorted
 */
async function pidsOver(opts, count, max = 200) {
  const pids = new Set();
  for (let i = 0; i < max && pids.size < count; i++) {
    const res = await request({ path: '/pid', ...opts });
    assert.strictEqual(res.status, 200, `${JSON.stringify(opts)}: ${res.status} ${res.body}`);
    pids.add(Number(res.body));
  }
  return [ ...pids ].sort(byNumber);
}

/**
 * request(), with the master's recent output added to a failure
 * @param {Object} m - master handle
 * @param {Object} opts - request() options
 * @return {Promise<Object>} the response
 */
function requestOf(m, opts) {
  return request(opts).catch(async err => {
    // (the failure is decided; give the master's last words a moment to arrive)
    await m.waitFor(h => h.closed, 1000).catch(() => {});
    err.message += `\n${m.tail(25)}`;
    throw err;
  });
}

/** @return {Promise<*>} the response, or the error if the request failed */
function settle(promise) {
  return promise.then(res => res, err => err);
}

/**
 * Whether a TCP socket is in LISTEN state on `port` (any address), from the
 * kernel's tables: no connection attempt, so no waiting
 * @param {number} port -
 * @return {boolean} -
 */
function isListening(port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const file of [ '/proc/net/tcp6', '/proc/net/tcp' ]) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (_) {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // sl local_address rem_address st ...; st 0A = LISTEN
      if (cols.length > 3 && cols[1].endsWith(hex) && cols[3] === '0A') return true;
    }
  }
  return false;
}

async function stop(m) {
  m.kill('SIGTERM');
  const exit = await m.waitExit(20000);
  assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
}

describe('connections', () => {
  // plain servers / sockets a test opened; closed after each test
  const opened = [];
  afterEach(async () => {
    for (const s of opened.splice(0)) {
      if (s instanceof net.Server) await new Promise(resolve => s.close(() => resolve()));
      else s.destroy();
    }
  });

  describe('https', () => {
    it('https options: egg-ready says https, both workers answer over TLS, not over plain HTTP', async () => {
      const m = await startMaster('basic', { https: { key: KEY, cert: CERT } }, { env: PROD });
      const port = m.options.port;
      const info = await m.waitReady();
      assert.deepStrictEqual(info, { port, address: `https://127.0.0.1:${port}`, protocol: 'https' });
      assert.match(m.output, masterLine(m, `egg started on https://127\\.0\\.0\\.1:${port} \\(\\d+ms\\)`));

      // verified against the test CA (the cert has IP:127.0.0.1 in its SAN)
      const res = await request({ port, https: true, ca: CA });
      assert.strictEqual(res.status, 200);
      assert.strictEqual(res.body, 'hi, egg');
      assert.deepStrictEqual(await pidsOver({ port, https: true, ca: CA }, 2), m.workers().app.sort(byNumber));

      const plain = await settle(get(port, '/', { timeout: 5000 }));
      assert(!(plain.status === 200), `plain HTTP on the TLS port answered ${plain.status} ${plain.body}`);
      await stop(m);
    });

    it('config.cluster.https (app config, no https option): the workers\' realport makes it https', async () => {
      // egg-cluster 2.5: the master starts with protocol http (no options.https);
      // each worker merges config.cluster.https into its https options and sends
      // realport {port, protocol: 'https'}, which the master takes.
      const m = await startMaster('https-config', {}, { env: PROD });
      const port = m.options.port;
      const info = await m.waitReady();
      assert.deepStrictEqual(info, { port, address: `https://127.0.0.1:${port}`, protocol: 'https' });
      assert.match(m.output, masterLine(m, `egg started on https://127\\.0\\.0\\.1:${port} \\(\\d+ms\\)`));
      assert.deepStrictEqual(await pidsOver({ port, https: true, ca: CA }, 2), m.workers().app.sort(byNumber));
      if (!REFERENCE) {
        const resolved = await m.waitFor('startCluster-resolved', 5000);
        assert.deepStrictEqual(resolved.data, info);
      }
      await stop(m);
    });

    it('https + debugPort: TLS on the port, plain HTTP on debugPort, both announced', async () => {
      const debugPort = await getFreePort();
      const m = await startMaster('basic', { https: { key: KEY, cert: CERT }, debugPort }, { env: PROD });
      const port = m.options.port;
      assert.notStrictEqual(debugPort, port);
      const info = await m.waitReady();
      assert.deepStrictEqual(info, { port, debugPort, address: `https://127.0.0.1:${port}`, protocol: 'https' });

      const lines = m.output.split('\n');
      const started = lines.findIndex(l => masterLine(m, `egg started on https://127\\.0\\.0\\.1:${port} \\(\\d+ms\\)`).test(l));
      const debug = lines.findIndex(l => masterLine(m, `egg started on http://127\\.0\\.0\\.1:${debugPort}`).test(l));
      assert(started >= 0, `no started line\n${m.tail()}`);
      assert(debug > started, `debugPort line at ${debug}, started line at ${started}\n${m.tail()}`);
      // the debugPort listens do not count as workers starting
      assert.strictEqual(m.lines(/\[master\] app_worker#\d+:\d+ started at /).length, 2, m.tail());
      assert.strictEqual(m.lines(new RegExp(`\\[master\\] app_worker#\\d+:\\d+ started at ${port}, `)).length, 2, m.tail());

      const apps = m.workers().app.sort(byNumber);
      assert.deepStrictEqual(await pidsOver({ port, https: true, ca: CA }, 2), apps, 'TLS on the port');
      assert.deepStrictEqual(await pidsOver({ port: debugPort }, 2), apps, 'plain HTTP on debugPort');
      const res = await get(debugPort, '/');
      assert.strictEqual(res.status, 200);
      assert.strictEqual(res.body, 'hi, egg');
      const plain = await settle(get(port, '/', { timeout: 5000 }));
      assert(!(plain.status === 200), `plain HTTP on the TLS port answered ${plain.status} ${plain.body}`);
      await stop(m);
    });
  });

  it('plain HTTP + debugPort: every worker serves on both ports (egg-cluster listens the one server twice: on the debug port alone)', async () => {
    const debugPort = await getFreePort();
    const m = await startMaster('basic', { debugPort }, { env: PROD });
    const port = m.options.port;
    const info = await m.waitReady();
    assert.deepStrictEqual(info, { port, debugPort, address: `http://127.0.0.1:${port}`, protocol: 'http' });
    assert.match(m.output, masterLine(m, `egg started on http://127\\.0\\.0\\.1:${debugPort}`));
    assert.strictEqual(m.lines(/\[master\] app_worker#\d+:\d+ started at /).length, 2, m.tail());
    const apps = m.workers().app.sort(byNumber);
    assert.deepStrictEqual(await pidsOver({ port }, 2), apps, 'the port');
    assert.deepStrictEqual(await pidsOver({ port: debugPort }, 2), apps, 'the debug port');
    await stop(m);
  });

  it('config.cluster.listen.path: serves on the unix socket, egg-ready address is the path', async () => {
    const m = await startMaster('unix-socket', {}, { env: PROD });
    const sock = path.join(m.baseDir, 'egg.sock');
    assert(Buffer.byteLength(sock) < 100, `socket path too long: ${sock}`);
    const port = m.options.port;
    const info = await m.waitReady();
    // egg-cluster 2.5: address is the path (addressType -1), port the option's
    assert.deepStrictEqual(info, { port, address: sock, protocol: 'http' });
    assert.match(m.output, masterLine(m, `egg started on ${esc(sock)} \\(\\d+ms\\)`));
    assert(fs.statSync(sock).isSocket(), `${sock} is not a socket`);

    const res = await request({ socketPath: sock });
    assert.strictEqual(res.status, 200);
    assert.strictEqual(res.body, 'hi, egg');
    assert.deepStrictEqual(await pidsOver({ socketPath: sock }, 2), m.workers().app.sort(byNumber));
    // nothing on the TCP port
    const tcp = await settle(get(port, '/', { timeout: 5000 }));
    assert.strictEqual(tcp.code, 'ECONNREFUSED', `TCP port ${port}: ${tcp.status || tcp.message}`);
    await stop(m);
  });

  it('config.cluster.listen.hostname: listens on that host only, egg-ready address uses it', async () => {
    // HOST=localhost would be the printed host if the listen address were not used
    const m = await startMaster('hostname', {}, { env: { ...PROD, HOST: 'localhost' } });
    const port = m.options.port;
    const info = await m.waitReady();
    assert.deepStrictEqual(info, { port, address: `http://127.0.0.1:${port}`, protocol: 'http' });
    assert.match(m.output, masterLine(m, `egg started on http://127\\.0\\.0\\.1:${port} \\(\\d+ms\\)`));
    assert.deepStrictEqual(await pidsOver({ port }, 2), m.workers().app.sort(byNumber));
    // bound to 127.0.0.1, not to every address: 127.0.0.2 (also loopback) is refused
    const other = await settle(request({ host: '127.0.0.2', port, timeout: 5000 }));
    assert.strictEqual(other.code, 'ECONNREFUSED', `127.0.0.2:${port}: ${other.status || other.message}`);
    await stop(m);
  });

  it('EADDRINUSE on the port: the worker reports it, the master exits 1, nothing is left', async () => {
    const blocker = net.createServer(s => s.destroy());
    opened.push(blocker);
    await new Promise((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen(0, resolve);
    });
    const port = blocker.address().port;
    const m = await startMaster('basic', { port }, { env: PROD });
    const exit = await m.waitExit(60000);
    assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
    assert.match(m.stderr,
      new RegExp(`${TS}ERROR \\d+ \\[app_worker\\] server got error: bind EADDRINUSE [^,\\n]*:${port}, code: EADDRINUSE$`, 'm'),
      m.tail());
    assert.match(m.stderr, masterLine(m, 'app_worker#\\d+:\\d+ start fail, exiting with code:1', 'ERROR'), m.tail());
    assert.match(m.stderr, masterLine(m, 'exit with code:1', 'ERROR'), m.tail());
    assert(!m.messages.some(msg => msg.action === 'egg-ready'), 'no egg-ready');
    await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
    assert.deepStrictEqual(findProcesses(m.baseDir), []);
    // the port is still the blocker's
    assert(blocker.listening);
  });

  it('an app listening on another port: only the real port counts, ready exactly once', async () => {
    const extraPort = await getFreePort();
    const m = await startMaster('extra-server', { extraPort }, { env: PROD });
    const port = m.options.port;
    assert.notStrictEqual(extraPort, port);
    const info = await m.waitReady();
    assert.deepStrictEqual(info, { port, address: `http://127.0.0.1:${port}`, protocol: 'http' });

    // the master saw the extra listens (before the real ones) and did not count them
    assert.strictEqual(m.lines(new RegExp(`\\[master\\] app_worker#\\d+:\\d+ listening on .*"port":${extraPort}\\b`)).length, 2, m.tail());
    assert.strictEqual(m.lines(/\[master\] app_worker#\d+:\d+ started at /).length, 2, m.tail());
    assert.strictEqual(m.lines(new RegExp(`\\[master\\] app_worker#\\d+:\\d+ started at ${port}, remain [01] `)).length, 2, m.tail());

    const apps = m.workers().app.sort(byNumber);
    assert.strictEqual(apps.length, 2);
    assert.deepStrictEqual(await pidsOver({ port }, 2), apps);
    const extra = new Set();
    for (let i = 0; i < 200 && extra.size < 2; i++) {
      const res = await get(extraPort, '/');
      assert.strictEqual(res.status, 200);
      assert.match(res.body, /^extra \d+$/);
      extra.add(Number(res.body.split(' ')[1]));
    }
    assert.deepStrictEqual([ ...extra ].sort(byNumber), apps);

    await stop(m);
    // over the master's whole life
    assert.strictEqual(m.messages.filter(msg => msg.action === 'egg-ready').length, 1, m.tail());
    assert.strictEqual(m.lines(/\[master\] egg started on /).length, 1, m.tail());
  });

  describe('sticky', () => {
    it('the real port is listening when egg-ready arrives', async () => {
      // egg-cluster 2.5 listens on the real port first and reports ready in the
      // listen callback, so the parent may connect the moment egg-ready arrives.
      // Checked synchronously in the IPC message handler (the kernel's socket
      // table), then with a request sent from that handler.
      const m = await startMaster('basic', { sticky: true }, { env: PROD });
      const port = m.options.port;
      assert.strictEqual(isListening(port), false, 'nothing listens on the port before the master starts');
      let listeningAtReady;
      const first = new Promise(resolve => {
        m.child.on('message', msg => {
          if (!msg || msg.action !== 'egg-ready' || listeningAtReady !== undefined) return;
          listeningAtReady = isListening(port);
          resolve(settle(request({ port, path: '/pid', localAddress: '127.0.0.2', timeout: 5000 })));
        });
      });
      await m.waitReady();
      const res = await first;
      assert.strictEqual(listeningAtReady, true, `port ${port} was not listening yet when egg-ready reached the parent`);
      assert.strictEqual(res.status, 200, `request right at egg-ready: ${res.status || res.message}\n${m.tail(10)}`);
      assert(m.workers().app.includes(Number(res.body)));
    });

    // on Linux all of 127.0.0.0/8 is local: every one is a distinct client address
    const ADDRS = Array.from({ length: 39 }, (_, i) => `127.0.0.${i + 2}`);

    /**
     * `rounds` requests from every address; each address must get 200s from one pid
     * @param {Object} m - master handle
     * @param {number} rounds -
     * @return {Promise<Map<string, number>>} address -> pid
     */
    async function mapAddresses(m, rounds) {
      const port = m.options.port;
      const map = new Map();
      for (const addr of ADDRS) {
        const pids = [];
        for (let i = 0; i < rounds; i++) {
          const res = await requestOf(m, { port, path: '/pid', localAddress: addr, timeout: 5000 });
          assert.strictEqual(res.status, 200, `${addr}: ${res.status} ${res.body}`);
          pids.push(Number(res.body));
        }
        assert(pids.every(p => p === pids[0]), `${addr} reached different workers: ${pids}`);
        map.set(addr, pids[0]);
      }
      return map;
    }

    function byPid(map) {
      const out = {};
      for (const [ addr, pid ] of map) (out[pid] = out[pid] || []).push(addr);
      return out;
    }

    it('same address -> same worker, addresses spread; a killed worker\'s clients fail over, then a replacement serves', async () => {
      // (egg-cluster 2.5 fails this one: its stickyWorker() keeps picking
      // workers[hash % options.workers], so after the kill half the clients are
      // handed to nobody and time out)
      const m = await startMaster('basic', { sticky: true }, { env: PROD });
      const port = m.options.port;
      await m.waitReady();
      const apps = m.workers().app.sort(byNumber);
      assert.strictEqual(apps.length, 2);

      const before = await mapAddresses(m, 3);
      const groups = byPid(before);
      assert.deepStrictEqual(Object.keys(groups).map(Number).sort(byNumber), apps, `spread: ${JSON.stringify(groups)}`);
      for (const pid of apps) {
        assert(groups[pid].length >= 5, `worker ${pid} got only ${groups[pid].length} of ${ADDRS.length} addresses: ${JSON.stringify(groups)}`);
      }

      const [ victim, survivor ] = apps;
      const moved = groups[victim];
      process.kill(victim, 'SIGKILL');
      // "<ts> ERROR <master pid> nodejs.AppWorkerDiedError: [master] app_worker#1:<pid> died (code: ..."
      await m.waitFor(new RegExp(`${TS}ERROR ${m.pid} nodejs\\.AppWorkerDiedError: \\[master\\] app_worker#\\d+:${victim} died `, 'm'), 10000);

      // every client (the moved ones first) gets 200 from the survivor
      const replacementListening = new RegExp(`\\[master\\] app_worker#\\d+:(?!${victim}\\b|${survivor}\\b)(\\d+) listening on `);
      const after = new Map();
      for (const addr of [ ...moved, ...groups[survivor] ]) {
        const res = await requestOf(m, { port, path: '/pid', localAddress: addr, timeout: 5000 });
        assert.strictEqual(res.status, 200, `${addr} after the kill: ${res.status} ${res.body}`);
        after.set(addr, Number(res.body));
      }
      assert(!m.exited, `master exited\n${m.tail()}`);
      const early = m.output.match(replacementListening);
      for (const [ addr, pid ] of after) {
        // (unless the replacement already listened: then it may take its slot back)
        const ok = pid === survivor || (early && pid === Number(early[1]));
        assert(ok, `${addr} reached ${pid} after ${victim} died (survivor ${survivor}, replacement listening: ${early && early[1]})\n${m.tail()}`);
      }

      // prod: a replacement is forked and listens
      const listening = await m.waitFor(replacementListening, 30000);
      const replacement = Number(listening[1]);
      await m.waitFor(new RegExp(`\\[master\\] app_worker#\\d+:${replacement} started at \\d+, remain 0 `), 10000);
      assert(!m.exited, `master exited\n${m.tail()}`);
      const now = m.workers().app.sort(byNumber);
      assert.deepStrictEqual(now, [ survivor, replacement ].sort(byNumber));

      const again = await mapAddresses(m, 3);
      for (const [ addr, pid ] of again) {
        assert(now.includes(pid), `${addr} reached ${pid}, not a live worker (${now})`);
      }
      // (informational) who got whom after the replacement
      const regrouped = byPid(again);
      if (process.env.EGG_CLUSTER_RS_TEST_VERBOSE) {
        console.log('sticky after replacement: %j (replacement %s)', regrouped, replacement);
      }
      await stop(m);
    });

    it('a client that connects and sends nothing does not stall the others', async () => {
      const m = await startMaster('basic', { sticky: true }, { env: PROD });
      const port = m.options.port;
      await m.waitReady();
      const apps = m.workers().app;

      // idle connections from 127.0.0.1 and a few other addresses (so every worker has one)
      const idleFrom = [ '127.0.0.1', ...ADDRS.slice(0, 8) ];
      const idle = await Promise.all(idleFrom.map(localAddress => new Promise((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1', localAddress });
        opened.push(s);
        s.once('error', err => reject(new Error(`idle connection from ${localAddress} to ${port}: ${err.message}\n${m.tail(20)}`)));
        s.once('connect', () => resolve(s));
      })));

      // others, and the same addresses on new connections, are served
      for (const addr of [ ...idleFrom, ...ADDRS.slice(8, 20) ]) {
        const res = await requestOf(m, { port, path: '/pid', localAddress: addr, timeout: 5000 });
        assert.strictEqual(res.status, 200, `${addr}: ${res.status} ${res.body}`);
        assert(apps.includes(Number(res.body)), `${addr} reached ${res.body}`);
      }
      const res = await get(port, '/', { timeout: 5000 });
      assert.strictEqual(res.status, 200);

      // the idle clients were kept, and are served when they finally speak
      const first = idle[0];
      assert(!first.destroyed, 'the idle connection was closed');
      const answer = await new Promise((resolve, reject) => {
        let data = '';
        first.setEncoding('utf8');
        first.on('data', chunk => {
          data += chunk;
          if (data.includes('\r\n\r\n')) resolve(data);
        });
        first.once('error', reject);
        first.once('close', () => reject(new Error(`idle connection closed, got: ${JSON.stringify(data)}`)));
        first.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      });
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert(!m.exited);
      await stop(m);
    });
  });
});
