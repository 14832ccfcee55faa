'use strict';

const assert = require('assert');
const http = require('http');
const { startMaster, get, collectWorkerPids } = require('./helper');

// One request on a new connection (`Connection: close`); resolves with the pid that answered or
// the error code, never rejects.
function hit(port) {
  return new Promise(resolve => {
    const req = http.get({ host: '127.0.0.1', port, path: '/pid', agent: false, headers: { connection: 'close' }, timeout: 10000 }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', chunk => { body += chunk; });
      res.on('end', () => resolve({ pid: Number(body) }));
      res.on('error', err => resolve({ err: err.code || err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', err => resolve({ err: err.code || err.message }));
  });
}

// Resolves once `cond()` holds, checking on every completed request (bounded by `ms`).
function until(cond, ms = 30000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${cond}`));
      setImmediate(tick);
    };
    tick();
  });
}

describe('reusePort', () => {
  it('a worker SIGKILLed under load loses no queued connection; its replacement takes its socket', async () => {
    const m = await startMaster('basic', { reusePort: true, workers: 2 }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    await m.waitReady();
    const [ victim, survivor ] = [ ...await collectWorkerPids(port, 2) ];

    const CLIENTS = 16;
    const errors = [];
    const servedBy = new Map();
    const started = new Map(); // client -> start time of its outstanding request
    let phase = 'before';
    let stop = false;
    const loop = async client => {
      while (!stop) {
        started.set(client, Date.now());
        const r = await hit(port);
        started.delete(client);
        if (r.err) errors.push({ phase, err: r.err });
        else servedBy.set(r.pid, (servedBy.get(r.pid) || 0) + 1);
      }
    };
    const clients = Array.from({ length: CLIENTS }, (_, i) => loop(i));
    await until(() => (servedBy.get(victim) || 0) > 20 && (servedBy.get(survivor) || 0) > 20);

    // Freeze the victim: connections the kernel hashes to its socket queue up unaccepted, until
    // every client is stuck on one. Then kill it: the queued connections must survive.
    process.kill(victim, 'SIGSTOP');
    await until(() => started.size === CLIENTS && [ ...started.values() ].every(t => Date.now() - t > 300));
    phase = 'kill';
    process.kill(victim, 'SIGKILL');
    await m.waitFor(new RegExp(`app_worker#\\d+:${victim} died \\(code: null, signal: SIGKILL`));
    // production: a replacement is forked into the same slot and takes over its socket
    const from = m.output.length;
    const startedLine = await m.waitFor(h => /app_worker#\d+:(\d+) started at/.exec(h.output.slice(from)), 30000);
    const replacement = Number(startedLine[1]);
    assert.notStrictEqual(replacement, victim);
    phase = 'after';
    await until(() => (servedBy.get(replacement) || 0) > 20);
    stop = true;
    await Promise.all(clients);

    // Only what the victim had already accepted when it froze may fail (at most the clients it
    // was serving then, about half); every client stuck after that waits on its queued socket
    // and is served by the replacement. Without the master's reference to the socket, all
    // CLIENTS fail here.
    const atKill = errors.filter(e => e.phase === 'kill');
    assert(atKill.length <= CLIENTS * 3 / 4, `${atKill.length} errors around the kill: ${JSON.stringify(atKill.slice(0, 5))}`);
    assert.deepStrictEqual(errors.filter(e => e.phase !== 'kill'), [], 'no error before the kill or after the replacement listens');
    assert((servedBy.get(survivor) || 0) > 20);
    assert.strictEqual((await get(port, '/')).status, 200);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});
