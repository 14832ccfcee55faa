'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `npm run bench:request-metrics` (the last step of `npm run bench`): what the workers' request
 * metrics cost (docs/observability.md): the bench app (egg 3, 2 app workers) under egg-cluster-rs
 * with them `on` (the default: a `request` listener and a response `close` listener per request,
 * counts and a fixed array of histogram buckets, carried by the heartbeat) and `off`
 * (EGG_CLUSTER_RS_HTTP_METRICS=0), rounds rotating the order. Per run, as `npm run bench`
 * measures them: HTTP `Connection: close` and keep-alive req/s, and the app workers' CPU per
 * request (their utime+stime over the measured window / the requests the app counted).
 * Medians [min–max] per variant; the spread across rounds is the noise to compare with.
 *
 * First, isolated from the noise of a shared machine: the listeners' own CPU per request, an
 * http.Server emitting `request` and its response `close` BENCH_RM_ISOLATED_N (200000) times,
 * with and without lib/child_stats.js tracking it, best of 5.
 *
 * BENCH_RM_ROUNDS=N   rounds (default 4)
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const bench = require('./index');
const loadgen = require('./lib/loadgen');
const { summary } = require('./lib/stats');

const ROUNDS = Number(process.env.BENCH_RM_ROUNDS || 4);
const VARIANTS = {
  on: {},
  off: { EGG_CLUSTER_RS_HTTP_METRICS: '0' },
};

function log(...args) {
  process.stderr.write(`[bench:request-metrics] ${args.join(' ')}\n`);
}

/**
 * ns per request of the request metrics' listeners alone: a server's `request` event with a
 * response whose `close` follows, tracked or not (the app's own listener is a no-op).
 */
function isolated() {
  const http = require('http');
  const EventEmitter = require('events');
  const N = Number(process.env.BENCH_RM_ISOLATED_N || 200000);
  const { trackRequests } = require('../lib/child_stats');
  const perRequest = tracked => {
    const server = http.createServer(() => {});
    if (tracked) trackRequests(server);
    const best = [];
    for (let round = 0; round < 5; round++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < N; i++) {
        const res = new EventEmitter();
        res.statusCode = 200;
        res.writableFinished = true;
        server.emit('request', null, res);
        res.emit('close');
      }
      best.push(Number(process.hrtime.bigint() - t0) / N);
    }
    return Math.min(...best);
  };
  const off = perRequest(false);
  const on = perRequest(true);
  return { off, on, cost: on - off };
}

async function one(variant, round, gen) {
  const inst = new bench.Instance('rs', { env: VARIANTS[variant] });
  const run = { variant, round };
  try {
    await inst.start();
    for (const [ key, close ] of [ [ 'close', true ], [ 'keepAlive', false ] ]) {
      const r = await bench.http(inst, gen, close);
      const requests = r.perWorker.reduce((a, w) => a + w.hits, 0);
      run[key] = {
        rps: r.rps,
        workerCpuUsPerReq: requests ? r.cpu.apps * 1000 / requests : null,
        masterCpuPct: r.masterCpuPct,
        // what the rest of the machine took meanwhile: the noise these figures swim in
        otherPct: r.cpu.otherPct,
      };
    }
    log(`${variant} round ${round}: close ${Math.round(run.close.rps)} req/s, ${run.close.workerCpuUsPerReq.toFixed(0)} µs worker CPU/req; ` +
      `keep-alive ${Math.round(run.keepAlive.rps)} req/s, ${run.keepAlive.workerCpuUsPerReq.toFixed(0)} µs/req`);
  } finally {
    await inst.stop();
  }
  return run;
}

const ROWS = [
  [ 'HTTP Connection: close, req/s', r => r.close.rps, 0 ],
  [ 'close: app workers CPU per request, µs', r => r.close.workerCpuUsPerReq, 0 ],
  [ 'HTTP keep-alive, req/s', r => r.keepAlive.rps, 0 ],
  [ 'keep-alive: app workers CPU per request, µs', r => r.keepAlive.workerCpuUsPerReq, 0 ],
  [ 'other processes\' CPU during the HTTP windows, % of a core', r => (r.close.otherPct + r.keepAlive.otherPct) / 2, 0 ],
];

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-bench-rm-'));
  bench.useTmpDir(tmp);
  const gen = loadgen.detect();
  log(`node ${process.version}, ${os.cpus().length} CPUs, ${ROUNDS} rounds, load generator ${gen.name}`);
  const iso = isolated();
  process.stdout.write(`\nthe listeners alone, ns per request (best of 5): untracked ${iso.off.toFixed(0)}, tracked ${iso.on.toFixed(0)}: ${iso.cost.toFixed(0)} ns per request\n`);
  const names = Object.keys(VARIANTS);
  const runs = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? names : [ ...names ].reverse();
    for (const v of order) runs.push(await one(v, round, gen));
  }
  const lines = [ `| request metrics | ${names.join(' | ')} | off / on |`, `| --- |${names.map(() => ' --- |').join('')} --- |` ];
  for (const [ label, pick, d ] of ROWS) {
    const cells = names.map(v => summary(runs.filter(r => r.variant === v).map(pick)));
    lines.push(`| ${label} | ${cells.map(c => bench.cell(c, d)).join(' | ')} | ${(cells[1].median / cells[0].median).toFixed(2)} |`);
  }
  process.stdout.write(`\nnode ${process.version}, ${os.cpus().length} CPUs, ${ROUNDS} rounds, medians [min–max]\n${lines.join('\n')}\n`);
  const out = path.join(__dirname, 'results', `request-metrics-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ node: process.version, rounds: ROUNDS, gen: gen.name, isolated: iso, runs }, null, 2));
  log(`raw runs: ${path.relative(process.cwd(), out)}`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

if (require.main === module) {
  main().catch(err => {
    bench.killAll();
    console.error(`[bench:request-metrics] failed: ${err && err.stack || err}`);
    process.exitCode = 1;
  });
}

// the isolated measure alone: node -p "require('./bench/request-metrics').isolated()"
exports.isolated = isolated;
