'use strict';

/**
 * A bounded HTTP load for the tests that change workers under traffic (reload, threads).
 * GET /pid answers with the id of the worker that served (its pid, or its thread id).
 */

const assert = require('assert');
const http = require('http');

/**
 * One GET /pid (or `path`, which answers the same way); resolves with { pid } or { error },
 * never rejects
 * @param {number} port -
 * @param {http.Agent|false} agent - a keep-alive agent, or false (a new connection, `Connection: close`)
 * @param {string} [localAddress] -
 * @param {string} [path] -
 * @param {number} [timeout] - ms without activity before the request fails
 * @return {Promise<Object>} -
 */
function hit(port, agent, localAddress, path = '/pid', timeout = 10000) {
  return new Promise(resolve => {
    const headers = agent ? {} : { connection: 'close' };
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers, localAddress, timeout }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', chunk => {
        body += chunk;
      });
      res.on('end', () => resolve(res.statusCode === 200 ? { pid: Number(body) } : { error: `status ${res.statusCode}: ${body}` }));
      res.on('error', err => resolve({ error: err.code || err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', err => resolve({ error: `${err.code || err.message}${req.reusedSocket ? ' (reused socket)' : ''}` }));
  });
}

/**
 * A bounded load loop: `keepAlive` clients on keep-alive connections (one agent, one socket
 * each) and `close` clients with a new connection per request, every one sending GET /pid
 * (or `path`) back to back until stop(). Client i connects from 127.0.0.<10 + i> (sticky mode
 * spreads connections by the client's address). `agents`: more keep-alive clients, on agents
 * the caller made (say, with a connection to a given worker).
 *
 * For long runs (bench/soak.js): `keep: false` stores no results (each goes to `onResult`
 * only), `pace` (ms) is the least time from one request's start to the client's next (a rate
 * bound; a failed request waits it too), `timeout` the request's inactivity limit.
 * `inflight[i]` is when client i's current request started (0 between requests).
 */
class Load {
  constructor(port, { keepAlive = 4, close = 4, agents = [], path = '/pid', keep = true, onResult = null, pace = 0, timeout = 10000 } = {}) {
    this.port = port;
    this.path = path;
    this.results = [];
    this.keep = keep;
    this.onResult = onResult;
    this.pace = pace;
    this.timeout = timeout;
    this.stopped = false;
    this.waiters = new Set();
    this.agents = [ ...agents ];
    this.inflight = [];
    // the caller's agents are the clients after the others
    const loops = agents.map((agent, j) => this.loop(agent, 'keep-alive', undefined, keepAlive + close + j));
    for (let i = 0; i < keepAlive; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      this.agents.push(agent);
      loops.push(this.loop(agent, 'keep-alive', `127.0.0.${10 + i}`, i));
    }
    for (let i = 0; i < close; i++) loops.push(this.loop(false, 'close', `127.0.0.${10 + keepAlive + i}`, keepAlive + i));
    this.done = Promise.all(loops);
  }

  async loop(agent, kind, localAddress, client) {
    while (!this.stopped) {
      const start = Date.now();
      this.inflight[client] = start;
      const r = await hit(this.port, agent, localAddress, this.path, this.timeout);
      this.inflight[client] = 0;
      r.kind = kind;
      r.client = client;
      r.start = start;
      r.t = Date.now();
      if (this.keep) this.results.push(r);
      if (this.onResult) this.onResult(r);
      for (const w of this.waiters) w();
      const rest = this.pace - (Date.now() - start);
      if (rest > 0 && !this.stopped) await new Promise(resolve => setTimeout(resolve, rest));
    }
  }

  /**
   * @param {Function} pred - (results) => truthy
   * @param {number} [timeout] -
   * @return {Promise<*>} pred's value
   */
  until(pred, timeout = 30000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = pred(this.results);
        if (!value) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`load: timeout waiting for ${pred.toString().slice(0, 160)}; last: ${JSON.stringify(this.results.slice(-5))}`));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  async stop() {
    this.stopped = true;
    await this.done;
    for (const agent of this.agents) agent.destroy();
  }

  failures() {
    return this.results.filter(r => r.error);
  }

  assertAllOk(m) {
    const bad = this.failures();
    assert.deepStrictEqual(bad.slice(0, 10), [], `${bad.length} of ${this.results.length} requests failed\n${m ? m.tail(40) : ''}`);
    assert(this.results.some(r => r.kind === 'keep-alive') && this.results.some(r => r.kind === 'close'));
  }

  count(from, to = Infinity) {
    return this.results.filter(r => r.t >= from && r.t <= to).length;
  }
}

module.exports = { Load, hit };
