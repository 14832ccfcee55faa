'use strict';

const assert = require('assert');
const net = require('net');
const { startMaster, request } = require('./helper');

// One HTTP/1.1 request over a raw socket, with optional bytes before it (a PROXY header);
// resolves with the status and body.
function rawRequest(port, { prefix = '', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    sock.setEncoding('latin1');
    sock.setTimeout(10000, () => sock.destroy(new Error('timed out')));
    sock.on('data', chunk => { data += chunk; });
    sock.on('error', reject);
    sock.on('close', () => {
      const m = data.match(/^HTTP\/1\.1 (\d+)[^]*?\r\n\r\n([^]*)$/);
      if (!m) return reject(new Error(`not an HTTP response: ${JSON.stringify(data.slice(0, 200))}`));
      resolve({ status: Number(m[1]), body: m[2] });
    });
    const lines = [ 'GET /pid HTTP/1.1', 'Host: localhost', 'Connection: close' ];
    for (const [ k, v ] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    sock.write(prefix + lines.join('\r\n') + '\r\n\r\n');
  });
}

async function pidsByKey(keys, send) {
  const byKey = new Map();
  for (const key of keys) {
    for (let i = 0; i < 3; i++) {
      const res = await send(key);
      assert.strictEqual(res.status, 200, `${key}: ${res.status} ${res.body}`);
      const pid = Number(res.body);
      if (byKey.has(key)) assert.strictEqual(pid, byKey.get(key), `${key} moved from ${byKey.get(key)} to ${pid}`);
      byKey.set(key, pid);
    }
  }
  return byKey;
}

const CLIENTS = Array.from({ length: 24 }, (_, i) => `10.1.${i}.${100 + i}`);

describe('sticky behind a proxy', () => {
  it('stickyKey x-forwarded-for: the same client always reaches one worker, clients spread', async () => {
    const m = await startMaster('basic', { sticky: true, stickyKey: 'x-forwarded-for' }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    await m.waitReady();
    // every request comes from 127.0.0.1 (the "proxy", trusted by default); the key is the header
    const byKey = await pidsByKey(CLIENTS, ip => rawRequest(port, { headers: { 'X-Forwarded-For': `${ip}, 127.0.0.1` } }));
    const workers = new Set(byKey.values());
    assert.deepStrictEqual([ ...workers ].sort(), m.workers().app.sort(), 'clients spread over both workers');
    // a request without the header still gets served (by the peer address)
    assert.strictEqual((await request({ port, path: '/pid' })).status, 200);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('an untrusted peer cannot choose its worker with the header', async () => {
    const m = await startMaster('basic', { sticky: true, stickyKey: 'x-forwarded-for', stickyTrustedProxies: [ '10.9.9.9' ] }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    await m.waitReady();
    // 127.0.0.1 is not trusted now: every header value lands on the worker of 127.0.0.1
    const byKey = await pidsByKey(CLIENTS, ip => rawRequest(port, { headers: { 'X-Forwarded-For': ip } }));
    assert.strictEqual(new Set(byKey.values()).size, 1);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('stickyKey proxy-protocol: PROXY v1 picks the worker and is consumed before the worker reads', async () => {
    const m = await startMaster('basic', { sticky: true, stickyKey: 'proxy-protocol' }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    await m.waitReady();
    const byKey = await pidsByKey(CLIENTS, ip => rawRequest(port, { prefix: `PROXY TCP4 ${ip} 127.0.0.1 40000 ${port}\r\n` }));
    assert.deepStrictEqual([ ...new Set(byKey.values()) ].sort(), m.workers().app.sort());
    // a silent client does not hold up the others
    const silent = net.connect({ port, host: '127.0.0.1' });
    await new Promise(resolve => silent.once('connect', resolve));
    const res = await rawRequest(port, { prefix: `PROXY TCP4 ${CLIENTS[0]} 127.0.0.1 40000 ${port}\r\n` });
    assert.strictEqual(Number(res.body), byKey.get(CLIENTS[0]));
    silent.destroy();
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('stickyKey proxy-protocol: a header without an address (v1 UNKNOWN, v2 LOCAL: balancer health checks) is consumed; the key is the peer', async () => {
    const m = await startMaster('basic', { sticky: true, stickyKey: 'proxy-protocol' }, { env: { EGG_SERVER_ENV: 'prod' } });
    const port = m.options.port;
    await m.waitReady();
    const sig = '\r\n\r\n\0\r\nQUIT\n';
    const prefixes = {
      'v1 UNKNOWN': 'PROXY UNKNOWN\r\n',
      'v1 UNKNOWN with fields': `PROXY UNKNOWN 10.1.0.1 127.0.0.1 40000 ${port}\r\n`,
      'v2 LOCAL': `${sig}\x20\x00\x00\x00`,
      'v2 LOCAL with an IPv4 block': `${sig}\x20\x11\x00\x0c\x0a\x01\x00\x01\x7f\x00\x00\x01\x01\x02\x03\x04`,
      'v2 PROXY UNSPEC': `${sig}\x21\x00\x00\x00`,
    };
    const byPeer = await pidsByKey(Object.keys(prefixes), name => rawRequest(port, { prefix: prefixes[name] }));
    // every one went by the peer (127.0.0.1): the worker a plain request from it reaches
    const plain = await pidsByKey([ 'plain' ], () => rawRequest(port));
    for (const [ name, pid ] of byPeer) assert.strictEqual(pid, plain.get('plain'), name);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('a bad stickyTrustedProxies entry fails fast, naming the option', async () => {
    await assert.rejects(() => require('..').startCluster({ baseDir: require('path').join(__dirname, 'fixtures/apps/basic'), sticky: true, stickyKey: 'x-forwarded-for', stickyTrustedProxies: [ '10.0.0.0/99' ] }),
      err => err.code === 'ERR_EGG_CLUSTER_OPTIONS' && /options\.stickyTrustedProxies\[0\]/.test(err.message));
  });
});
