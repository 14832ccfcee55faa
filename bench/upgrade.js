'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `node bench/upgrade.js` (part of `npm run bench`): a deploy under load, the egg-scripts way
 * against the master upgrade, on the bench app (egg 3, 2 app workers):
 *
 *   A  egg-scripts stop --title=T && egg-scripts start --daemon --title=T  (egg-cluster 2.5)
 *   B  egg-cluster-rs upgrade --title=T   (a master started by egg-scripts start --daemon
 *      --framework=<this package>)
 *
 * 8 clients (4 keep-alive, 4 `Connection: close`) send GET / back to back from before the change
 * until 2 s after it; a failed request waits 10 ms before the next (a refused port would
 * otherwise spin the client). Per side and round: the change's wall time, failed requests, the
 * longest time without any successful response ("without service"), and p50/p99 of the requests
 * sent during the change. Rounds alternate A B A B; medians [min–max] are printed.
 *
 * BENCH_UPGRADE_ROUNDS=N   rounds (default 3)
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const { performance } = require('perf_hooks');
const { freePort } = require('./lib/port');
const { run } = require('./lib/run');
const { summary } = require('./lib/stats');

const ROOT = path.join(__dirname, '..');
const APP = path.join(__dirname, 'fixtures', 'app');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');
const CLI = path.join(ROOT, 'bin', 'egg-cluster-rs.js');
const ROUNDS = Number(process.env.BENCH_UPGRADE_ROUNDS || 3);
const AFTER_MS = 2000;

function log(...args) {
  console.log('[bench:upgrade]', ...args);
}

/** Clients sending GET / back to back; each result is { start, end, ok }. */
function startLoad(port) {
  const results = [];
  let stopped = false;
  const one = agent => new Promise(resolve => {
    const start = performance.now();
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent, headers: agent ? {} : { connection: 'close' }, timeout: 30000 }, res => {
      res.resume();
      res.on('end', () => resolve({ start, end: performance.now(), ok: res.statusCode === 200 }));
      res.on('error', () => resolve({ start, end: performance.now(), ok: false }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ start, end: performance.now(), ok: false }));
  });
  const loop = async agent => {
    while (!stopped) {
      const r = await one(agent);
      results.push(r);
      if (!r.ok) await new Promise(resolve => setTimeout(resolve, 10));
    }
    if (agent) agent.destroy();
  };
  const loops = [];
  for (let i = 0; i < 4; i++) loops.push(loop(new http.Agent({ keepAlive: true, maxSockets: 1 })));
  for (let i = 0; i < 4; i++) loops.push(loop(false));
  return {
    results,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, 20));
  }
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : null;
}

async function round(side, tmp) {
  const port = await freePort();
  const title = `egg-cluster-rs-bench-upgrade-${process.pid}-${side}-${Date.now()}`;
  const env = { ...process.env, BENCH_TMP: tmp, EGG_SERVER_ENV: 'prod', HOME: tmp };
  const framework = side === 'rs' ? ROOT : path.join(ROOT, 'node_modules', 'egg');
  const start = () => run(EGG_SCRIPTS, [ 'start', '--daemon', `--title=${title}`, `--port=${port}`, '--workers=2',
    `--framework=${framework}`, `--stdout=${path.join(tmp, `${title}.out`)}`, `--stderr=${path.join(tmp, `${title}.err`)}`, APP ], env);
  const stop = () => run(EGG_SCRIPTS, [ 'stop', `--title=${title}` ], env);
  await start();
  const load = startLoad(port);
  try {
    await waitFor(() => load.results.filter(r => r.ok).length >= 500, 30000, 'load before the change');
    const t0 = performance.now();
    if (side === 'rs') {
      await run(CLI, [ 'upgrade', `--title=${title}` ], env);
    } else {
      await stop();
      await start();
    }
    const t1 = performance.now();
    await new Promise(resolve => setTimeout(resolve, AFTER_MS));
    await load.stop();
    const from = load.results.filter(r => r.end >= t0);
    const failed = from.filter(r => !r.ok).length;
    // the longest stretch in [t0, end] with no successful response completing
    const oks = from.filter(r => r.ok).map(r => r.end).sort((a, b) => a - b);
    let gap = 0;
    let prev = t0;
    for (const t of oks) {
      gap = Math.max(gap, t - prev);
      prev = t;
    }
    const during = load.results.filter(r => r.start >= t0 && r.start <= t1 && r.ok).map(r => r.end - r.start).sort((a, b) => a - b);
    return { changeMs: t1 - t0, failed, requests: from.length, withoutServiceMs: gap, p50: pct(during, 0.5), p99: pct(during, 0.99) };
  } finally {
    await load.stop();
    await stop().catch(() => {});
  }
}

async function main() {
  try {
    require.resolve(path.join(ROOT, 'native.js'));
  } catch (_) {
    throw new Error('the addon is not built: run `npm run build` first');
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-bench-upgrade-'));
  log(`node ${process.version}, ${os.cpus().length} CPUs, ${ROUNDS} round(s), egg 3 bench app, 2 app workers`);
  const runs = { A: [], rs: [] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const side of [ 'A', 'rs' ]) {
      const r = await round(side, tmp);
      runs[side].push(r);
      log(`round ${i + 1} ${side === 'A' ? 'egg-scripts stop && start' : 'egg-cluster-rs upgrade'}: ${JSON.stringify(r, (k, v) => (typeof v === 'number' ? Math.round(v * 10) / 10 : v))}`);
    }
  }
  const fmt = (xs, unit = '') => {
    const s = summary(xs);
    if (!s) return '-';
    const r = x => (x >= 100 ? Math.round(x).toLocaleString('en-US') : (Math.round(x * 10) / 10).toString());
    return s.n > 1 ? `${r(s.median)}${unit} [${r(s.min)}–${r(s.max)}]` : `${r(s.median)}${unit}`;
  };
  console.log('\n| deploy under load (8 clients) | change took | failed requests | without service | p50 / p99 during the change |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const [ side, name ] of [[ 'A', '`egg-scripts stop && start` (egg-cluster 2.5)' ], [ 'rs', '`egg-cluster-rs upgrade`' ]]) {
    const xs = runs[side];
    console.log(`| ${name} | ${fmt(xs.map(x => x.changeMs), ' ms')} | ${fmt(xs.map(x => x.failed))} of ${fmt(xs.map(x => x.requests))} | ${fmt(xs.map(x => x.withoutServiceMs), ' ms')} | ${fmt(xs.map(x => x.p50), ' ms')} / ${fmt(xs.map(x => x.p99), ' ms')} |`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch(err => {
  console.error(err);
  process.exitCode = 1;
});
