'use strict';

// Drain on stop: lib/drain.js on its own (plain servers in this process), then app workers
// under a real master (SIGTERM to the master with requests in flight).

const assert = require('assert');
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const path = require('path');
const { once } = require('events');
const { TS, FIXTURES, startMaster, logTime } = require('./helper');
const { trackServer, requestsInFlight, drainServers } = require('../lib/drain');

const KEY = path.join(FIXTURES, 'certs/server.key');
const CERT = path.join(FIXTURES, 'certs/server.crt');
const CA = fs.readFileSync(CERT);

async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server.address().port;
}

/**
 * One request; resolves with the response, the socket it used and whether it was reused
 * @param {Object} opts - http.request options (+ mod: http or https)
 * @return {Promise<Object>} { status, headers, body, socket, reused }
 */
function send(opts) {
  const mod = opts.mod || http;
  return new Promise((resolve, reject) => {
    const req = mod.request({ host: '127.0.0.1', timeout: 20000, ...opts, mod: undefined }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', chunk => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, socket: req.socket, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${opts.path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Resolves when `socket` closes: { at, hadError, error }
 * @param {net.Socket} socket -
 * @return {Promise<Object>} -
 */
function closeOf(socket) {
  return new Promise(resolve => {
    let error = null;
    socket.on('error', err => {
      error = err;
    });
    socket.once('close', hadError => resolve({ at: Date.now(), hadError, error }));
  });
}

/**
 * Resolves with a connect error (the server no longer accepts), rejects if it connects
 * @param {number} port -
 * @return {Promise<Error>} -
 */
function refused(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      reject(new Error('connected: the server still accepts'));
    });
    s.once('error', resolve);
  });
}

describe('drainServers (lib/drain.js)', () => {
  const cleanups = [];
  afterEach(() => {
    while (cleanups.length) cleanups.pop()();
  });

  /**
   * A tracked server on 127.0.0.1 whose handler is `handler(req, res)`; `requests` gets each
   * request as it arrives
   * @param {Function} handler -
   * @param {Object} [tlsOptions] - make it https
   * @return {Promise<Object>} { server, port, requests: EventEmitter }
   */
  async function makeServer(handler, tlsOptions) {
    const server = tlsOptions ? https.createServer(tlsOptions, handler) : http.createServer(handler);
    trackServer(server);
    const port = await listen(server);
    cleanups.push(() => {
      server.closeAllConnections();
      server.close();
    });
    return { server, port };
  }

  function keepAliveAgent(mod = http) {
    const agent = new mod.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    return agent;
  }

  it('in-flight requests finish with Connection: close; the server stops accepting at once', async () => {
    let release;
    const released = new Promise(resolve => {
      release = resolve;
    });
    const { server, port } = await makeServer(async (req, res) => {
      await released;
      res.end(`done ${req.url}`);
    });
    const agent = keepAliveAgent();
    const arrived = once(server, 'request');
    const keepAlive = send({ port, path: '/ka', agent });
    const closing = send({ port, path: '/close', agent: false, headers: { connection: 'close' } });
    await arrived;
    while (requestsInFlight([ server ]) < 2) await once(server, 'request');

    const drained = drainServers([ server, server ], { timeout: 5000, idleGrace: 200 });
    await refused(port);
    release();
    const [ a, b ] = await Promise.all([ keepAlive, closing ]);
    assert.deepStrictEqual([ a.status, a.body, a.headers.connection ], [ 200, 'done /ka', 'close' ]);
    assert.deepStrictEqual([ b.status, b.body, b.headers.connection ], [ 200, 'done /close', 'close' ]);
    assert.deepStrictEqual(await drained, { timedOut: false });
    assert.strictEqual(requestsInFlight([ server ]), 0);
  });

  it('an idle keep-alive connection is closed after the grace; a request sent on one meanwhile gets Connection: close', async () => {
    const { server, port } = await makeServer((req, res) => res.end(`hi ${req.url}`));
    const idleAgent = keepAliveAgent();
    const busyAgent = keepAliveAgent();
    const idle = await send({ port, path: '/idle', agent: idleAgent });
    const busy = await send({ port, path: '/busy', agent: busyAgent });
    assert.strictEqual(idle.headers.connection, 'keep-alive');
    const idleClosed = closeOf(idle.socket);

    const start = Date.now();
    const drained = drainServers([ server ], { timeout: 5000, idleGrace: 300 });
    const again = await send({ port, path: '/again', agent: busyAgent });
    assert(again.reused, 'the request did not go on the existing connection');
    assert.strictEqual(again.socket, busy.socket);
    assert.deepStrictEqual([ again.status, again.body, again.headers.connection ], [ 200, 'hi /again', 'close' ]);

    const closed = await idleClosed;
    assert.strictEqual(closed.error, null);
    assert.strictEqual(closed.hadError, false);
    assert(closed.at - start >= 290, `idle connection closed ${closed.at - start}ms after the drain began, before the grace`);
    assert.deepStrictEqual(await drained, { timedOut: false });
    assert(Date.now() - start < 2000, `drained in ${Date.now() - start}ms`);
  });

  it('a connection that has not sent its request yet is left open for it past the idle grace', async () => {
    const { server, port } = await makeServer((req, res) => res.end('late'));
    const accepted = once(server, 'connection');
    const socket = net.connect(port, '127.0.0.1');
    cleanups.push(() => socket.destroy());
    await accepted;
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', chunk => {
      text += chunk;
    });

    const drained = drainServers([ server ], { timeout: 5000, idleGrace: 300, freshGrace: 1500 });
    // Time is what this test is about: a client starved of CPU sends its first request after
    // the idle grace (300 ms) has run out; the connection waits for it (freshGrace).
    await new Promise(resolve => setTimeout(resolve, 700));
    assert(!socket.destroyed && socket.readyState === 'open', 'a fresh connection was closed before its first request');
    socket.write('GET /late HTTP/1.1\r\nHost: x\r\n\r\n');
    await once(socket, 'end');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\nConnection: close\r\n/i);
    assert.match(text, /\r\n\r\nlate$/);
    assert.deepStrictEqual(await drained, { timedOut: false });
  });

  it('bytes arriving on an idle connection keep it open for that request', async () => {
    const { server, port } = await makeServer((req, res) => res.end('whole'));
    const accepted = once(server, 'connection');
    const socket = net.connect(port, '127.0.0.1');
    cleanups.push(() => socket.destroy());
    await accepted;
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', chunk => {
      text += chunk;
    });

    const drained = drainServers([ server ], { timeout: 5000, idleGrace: 500 });
    socket.write('GET /part HTTP/1.1\r\nHost: x\r\n'); // not finished yet
    // Time is what this test is about: past the grace (500 ms), a connection that received
    // nothing would be closed by now; this one got bytes, so it gets another grace.
    await new Promise(resolve => setTimeout(resolve, 700));
    assert(!socket.destroyed && socket.readyState === 'open', 'the connection was closed mid-request');
    socket.write('\r\n');
    await once(socket, 'end');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\nConnection: close\r\n/i);
    assert.match(text, /\r\n\r\nwhole$/);
    assert.deepStrictEqual(await drained, { timedOut: false });
  });

  it('a request that reached the kernel while the loop was busy past the grace is answered, not reset', async () => {
    const { server, port } = await makeServer((req, res) => res.end(`hi ${req.url}`));
    const agent = keepAliveAgent();
    const first = await send({ port, path: '/first', agent });
    assert.strictEqual(first.headers.connection, 'keep-alive');
    const { socket } = first;
    // From a check-phase callback: the drain starts (its grace: 50 ms), the client writes its
    // next request on the idle connection (a small write goes to the kernel at once), and the
    // loop stays busy past the grace. The loop's next turn runs the grace's timer before it
    // polls the connection: closing it there would reset a request the server has unread.
    const drained = await new Promise(resolve => setImmediate(() => {
      const d = drainServers([ server ], { timeout: 5000, idleGrace: 50 });
      const again = send({ port, path: '/again', agent });
      const until = Date.now() + 150;
      while (Date.now() < until) {
        // the loop is busy
      }
      resolve({ d, again });
    }));
    const again = await drained.again;
    assert(again.reused, 'the request did not go on the idle connection');
    assert.strictEqual(again.socket, socket);
    assert.deepStrictEqual([ again.status, again.body, again.headers.connection ], [ 200, 'hi /again', 'close' ]);
    assert.deepStrictEqual(await drained.d, { timedOut: false });
  });

  it('https: same, on the TLS connections', async () => {
    let release;
    const released = new Promise(resolve => {
      release = resolve;
    });
    const tlsOptions = { key: fs.readFileSync(KEY), cert: fs.readFileSync(CERT) };
    const { server, port } = await makeServer(async (req, res) => {
      if (req.url === '/slow') await released;
      res.end(`tls ${req.url}`);
    }, tlsOptions);
    const idleAgent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: CA });
    cleanups.push(() => idleAgent.destroy());
    const idle = await send({ mod: https, port, path: '/idle', agent: idleAgent, servername: 'localhost' });
    assert.strictEqual(idle.headers.connection, 'keep-alive');
    const idleClosed = closeOf(idle.socket);
    const busyAgent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: CA });
    cleanups.push(() => busyAgent.destroy());
    const slow = send({ mod: https, port, path: '/slow', agent: busyAgent, servername: 'localhost' });
    while (requestsInFlight([ server ]) < 1) await once(server, 'request');

    const drained = drainServers([ server ], { timeout: 5000, idleGrace: 200 });
    await refused(port);
    const closed = await idleClosed;
    assert.strictEqual(closed.error, null);
    release();
    const res = await slow;
    assert.deepStrictEqual([ res.status, res.body, res.headers.connection ], [ 200, 'tls /slow', 'close' ]);
    assert.deepStrictEqual(await drained, { timedOut: false });
  });

  it('an upgraded connection does not hold the drain', async () => {
    const { server, port } = await makeServer((req, res) => res.end('plain'));
    server.on('upgrade', (req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', chunk => socket.write(chunk)); // echo, for as long as the client wants
    });
    const req = http.request({ host: '127.0.0.1', port, path: '/ws', headers: { connection: 'upgrade', upgrade: 'test' } });
    req.end();
    const [ , upgraded ] = await once(req, 'upgrade');
    cleanups.push(() => upgraded.destroy());

    const start = Date.now();
    assert.deepStrictEqual(await drainServers([ server ], { timeout: 3000, idleGrace: 100 }), { timedOut: false });
    assert(Date.now() - start < 1000, `drained in ${Date.now() - start}ms`);
    upgraded.write('still here');
    const [ echo ] = await once(upgraded, 'data');
    assert.strictEqual(String(echo), 'still here');
  });

  it('gives up after the timeout', async () => {
    const { server, port } = await makeServer(() => {}); // never answers
    const pending = send({ port, path: '/never', agent: false }).catch(err => err);
    await once(server, 'request');
    const start = Date.now();
    assert.deepStrictEqual(await drainServers([ server ], { timeout: 300 }), { timedOut: true });
    const took = Date.now() - start;
    assert(took >= 290 && took < 1500, `gave up after ${took}ms`);
    assert.strictEqual(requestsInFlight([ server ]), 1);
    server.closeAllConnections();
    assert(await pending instanceof Error);
  });
});

describe('drain on stop (app workers)', () => {
  const PROD = { EGG_SERVER_ENV: 'prod', EGG_APP_WORKER_LOGGER_LEVEL: 'INFO' };

  // "[app_worker] draining N requests" lines: the sum of N
  function drainedRequests(m) {
    return m.lines(/\[app_worker\] draining \d+ requests?$/)
      .reduce((sum, line) => sum + Number(line.match(/draining (\d+)/)[1]), 0);
  }

  for (const [ mode, opts ] of [ [ 'shared socket', {} ], [ 'reusePort', { reusePort: true } ], [ 'sticky', { sticky: true } ] ]) {
    it(`${mode}: SIGTERM with 8 requests in flight: all 8 complete (Connection: close), then the master exits 0`, async () => {
      const m = await startMaster('slow', opts, { env: PROD });
      const { port } = await m.waitReady();
      // 4 over keep-alive connections that already served a request, 4 with Connection: close
      const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
      try {
        const warm = await Promise.all([ 1, 2, 3, 4 ].map(() => send({ port, path: '/pid', agent })));
        const sockets = new Set(warm.map(r => r.socket));
        const requests = [];
        for (let i = 0; i < 4; i++) requests.push(send({ port, path: `/slow?ms=1000&id=ka${i}`, agent }));
        for (let i = 0; i < 4; i++) {
          requests.push(send({ port, path: `/slow?ms=1000&id=close${i}`, agent: false, headers: { connection: 'close' } }));
        }
        await m.waitForMessages('slow-start', 8);
        const t0 = Date.now();
        m.kill('SIGTERM');
        const results = await Promise.all(requests.map(p => p.catch(err => err)));
        const exit = await m.waitExit(15000);
        const elapsed = m.exitedAt - t0;

        for (const [ i, res ] of results.entries()) {
          assert(!(res instanceof Error), `request ${i}: ${res && res.message}\n${m.tail()}`);
          assert.strictEqual(res.status, 200, `request ${i}`);
          assert.match(res.body, /^slept 1000 in \d+$/);
          assert.strictEqual(res.headers.connection, 'close', `request ${i}`);
        }
        assert(results.slice(0, 4).every(r => r.reused && sockets.has(r.socket)), 'the keep-alive requests did not reuse their connections');
        assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
        assert.strictEqual(drainedRequests(m), 8, m.tail());
        assert.strictEqual(m.lines(/\[app_worker\] receive signal SIGTERM, exiting with code:0$/).length, 2, m.tail());
        assert.strictEqual(m.lines(/\[app_worker\] exit with code:0$/).length, 2, m.tail());
        assert.match(m.output, new RegExp(`${TS}INFO ${m.pid} \\[master\\] close done, exiting with code:0$`, 'm'));
        assert.match(m.output, new RegExp(`${TS}INFO ${m.pid} \\[master\\] exit with code:0$`, 'm'));
        assert(elapsed < 5000, `the master exited ${elapsed}ms after SIGTERM`);
        console.log(`      (${mode}: master exited ${elapsed}ms after SIGTERM)`);
      } finally {
        agent.destroy();
      }
    });
  }

  it('an idle keep-alive connection is closed cleanly; a request sent on a keep-alive connection meanwhile gets Connection: close', async () => {
    const m = await startMaster('slow', { workers: 1 }, { env: PROD });
    const { port } = await m.waitReady();
    const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const busyAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const idle = await send({ port, path: '/pid', agent: idleAgent });
      assert.strictEqual(idle.headers.connection, 'keep-alive');
      const idleClosed = closeOf(idle.socket);
      // headers (keep-alive) go out at once, the body ends 1.5 s later
      const stream = send({ port, path: '/stream?ms=1500&id=stream', agent: busyAgent });
      await m.waitForMessages('slow-start', 1);
      // queued behind it on the same connection: sent as soon as the stream ends, during the drain
      const next = send({ port, path: '/pid', agent: busyAgent });

      const t0 = Date.now();
      m.kill('SIGTERM');
      const closed = await idleClosed;
      const streamed = await stream;
      const streamedAt = Date.now();
      const after = await next;
      const exit = await m.waitExit(15000);

      assert.strictEqual(closed.error, null, 'the idle connection got an error');
      assert.strictEqual(closed.hadError, false);
      assert(closed.at - t0 >= 490, `the idle connection was closed ${closed.at - t0}ms after SIGTERM, before the grace`);
      assert(closed.at < streamedAt, 'the idle connection stayed open until the end of the drain');
      assert.deepStrictEqual([ streamed.status, streamed.headers.connection ], [ 200, 'keep-alive' ]);
      assert.match(streamed.body, /^streamed 1500 in \d+$/);
      // (a request queued in the agent gets the freed socket without `reusedSocket` being set)
      assert(after.socket === streamed.socket, 'the next request did not go on the same connection');
      assert.deepStrictEqual([ after.status, after.headers.connection ], [ 200, 'close' ]);
      assert.strictEqual(after.body, streamed.body.match(/in (\d+)$/)[1]);
      assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
      assert.strictEqual(drainedRequests(m), 1, m.tail());
    } finally {
      idleAgent.destroy();
      busyAgent.destroy();
    }
  });

  it('a request that outlives EGG_APP_CLOSE_TIMEOUT does not hold the master: the worker gives up first', async () => {
    const m = await startMaster('slow', { workers: 1 }, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: 1500 } });
    const { port } = await m.waitReady();
    const long = send({ port, path: '/slow?ms=10000&id=long', agent: false }).catch(err => err);
    await m.waitForMessages('slow-start', 1);
    const t0 = Date.now();
    m.kill('SIGTERM');
    const exit = await m.waitExit(15000);
    const elapsed = m.exitedAt - t0;
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    assert(elapsed < 4000, `the master exited ${elapsed}ms after SIGTERM`);
    assert.strictEqual(drainedRequests(m), 1, m.tail());
    // the worker exited by itself (graceful-process's line), before the master's SIGKILL at 1500 ms
    const [ exitLine ] = m.lines(new RegExp(`${TS}INFO \\d+ \\[app_worker\\] exit with code:0$`));
    assert(exitLine, m.tail());
    assert(logTime(exitLine) - t0 < 1500, `the worker exited ${logTime(exitLine) - t0}ms after SIGTERM`);
    assert(await long instanceof Error, 'the 10 s request got an answer');
    console.log(`      (master exited ${elapsed}ms after SIGTERM, the worker ${logTime(exitLine) - t0}ms)`);
  });
});
