'use strict';

/**
 * HTTP load generators: wrk when it is on PATH (Debian package `wrk`), else autocannon (a
 * devDependency) run by autocannon-run.js in a child process. Either way the generator is a child of this
 * process, so its own CPU time is the growth of our cutime+cstime across the run (nothing else of
 * ours exits meanwhile).
 *
 * BENCH_LOADGEN=autocannon forces the fallback.
 */

const path = require('path');
const { spawn, spawnSync } = require('child_process');
const proc = require('./proc');

function detect() {
  if (process.env.BENCH_LOADGEN !== 'autocannon') {
    const r = spawnSync('wrk', [ '--version' ], { encoding: 'utf8' });
    if (!r.error) {
      const m = /wrk\s+(?:\S*\/)?([\d.]+)/.exec(r.stdout + r.stderr);
      return { name: 'wrk', version: m ? m[1] : 'unknown', bin: 'wrk' };
    }
  }
  const main = require.resolve('autocannon/autocannon.js');
  const pkg = require(path.join(path.dirname(main), 'package.json'));
  return { name: 'autocannon', version: pkg.version, bin: path.join(__dirname, 'autocannon-run.js') };
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [ 'ignore', 'pipe', 'pipe' ] });
    let out = '';
    let err = '';
    child.stdout.on('data', d => { out += d; });
    child.stderr.on('data', d => { err += d; });
    child.on('error', reject);
    child.on('close', code => {
      if (code !== 0) reject(new Error(`${path.basename(cmd)} exited with ${code}: ${err || out}`));
      else resolve({ out, err });
    });
  });
}

const UNIT_S = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

/**
 * @param {object} gen - from detect()
 * @param {{url: string, connections: number, durationS: number, close: boolean, rate?: number}} o -
 *   `rate`: at most this many requests/s over all connections (autocannon only: wrk has no such
 *   option, so with wrk the load is bounded by `connections` alone)
 * @return {Promise<{requests, durationS, rps, errors, non2xx, latencyMs, cpuMs, wallMs}>} -
 */
async function load(gen, o) {
  const cpu0 = proc.childrenCpuMs();
  const w0 = Date.now();
  let r;
  if (gen.name === 'wrk') {
    const args = [ '-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '10s' ];
    if (o.close) args.push('-H', 'Connection: close');
    args.push(o.url);
    const { out } = await run(gen.bin, args);
    const m = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
    if (!m) throw new Error(`cannot parse wrk output:\n${out}`);
    const durationS = Number(m[2]) * UNIT_S[m[3]];
    const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
    const lat = /Latency\s+([\d.]+)(us|ms|s)/.exec(out);
    r = {
      requests: Number(m[1]),
      durationS,
      rps: Number(m[1]) / durationS,
      errors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
      non2xx: non2xx ? Number(non2xx[1]) : 0,
      latencyMs: lat ? Number(lat[1]) * UNIT_S[lat[2]] * 1000 : null,
    };
  } else {
    const { out } = await run(process.execPath, [ gen.bin, JSON.stringify(o) ]);
    const j = JSON.parse(out.slice(out.indexOf('{')));
    r = {
      requests: j.requests.total,
      durationS: j.duration,
      rps: j.requests.total / j.duration,
      errors: (j.errors || 0) + (j.timeouts || 0),
      non2xx: j.non2xx || 0,
      latencyMs: j.latency ? j.latency.average : null,
    };
  }
  r.wallMs = Date.now() - w0;
  r.cpuMs = proc.childrenCpuMs() - cpu0;
  return r;
}

module.exports = { detect, load };
