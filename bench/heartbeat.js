'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `npm run bench:heartbeat`: what the hung-worker detection (docs/self-healing.md) costs. The
 * bench app (egg 3, 2 app workers) under egg-cluster-rs three ways, rounds rotating the order:
 *
 *   on          the default: a heartbeat from each child every second (a timer plus Node's
 *               event-loop delay monitor), and a watchdog thread per worker process
 *   no-watchdog EGG_CLUSTER_RS_WORKER_TIMEOUT=0: the heartbeat and the lag gauge, no watchdog
 *               threads, no hang detection
 *   off         also no heartbeat (bench/lib/no-heartbeat.js preloaded): what the master was
 *               before #18
 *
 * First, isolated: three bare Node processes with an IPC channel, idle for BENCH_HB_ISOLATED_S
 * (60) seconds side by side, running nothing, the heartbeat alone, and the heartbeat with the
 * watchdog thread (what lib/heartbeat.js starts in a worker): the exact cost per child, CPU ms
 * per minute and RSS, free of the app's own timers.
 *
 * Then per run: CPU of the master, the agent and the app workers over 20 s of idle (ms per minute)
 * and the tree's RSS; relay of 16-byte messages (msgs/s, master CPU per 100k messages);
 * HTTP `Connection: close` and keep-alive (req/s, master CPU %), as `npm run bench` measures them.
 * Medians [min–max] per variant; the spread of "on" across rounds is the A/A noise.
 *
 * BENCH_HB_ROUNDS=N   rounds (default 4)
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const bench = require('./index');
const proc = require('./lib/proc');
const loadgen = require('./lib/loadgen');
const { summary } = require('./lib/stats');

const ROUNDS = Number(process.env.BENCH_HB_ROUNDS || 4);
const ISOLATED_S = Number(process.env.BENCH_HB_ISOLATED_S || 60);
const IDLE_MS = 20000;
const VARIANTS = {
  on: {},
  'no-watchdog': { EGG_CLUSTER_RS_WORKER_TIMEOUT: '0' },
  off: {
    EGG_CLUSTER_RS_WORKER_TIMEOUT: '0',
    NODE_OPTIONS: `${process.env.NODE_OPTIONS || ''} --require ${path.join(__dirname, 'lib', 'no-heartbeat.js')}`.trim(),
  },
};

function log(...args) {
  process.stderr.write(`[bench:heartbeat] ${args.join(' ')}\n`);
}

function treeRssKiB(inst) {
  return [ inst.masterPid, ...inst.children.agent, ...inst.children.app ].reduce((a, p) => a + (proc.rssKiB(p) || 0), 0);
}

async function idle(inst) {
  await bench.waitQuiet(bench.CFG.quietWindowMs);
  const a = inst.cpu();
  await new Promise(r => setTimeout(r, IDLE_MS));
  const d = bench.Instance.cpuDelta(a, inst.cpu());
  const perMin = x => x / d.wallMs * 60000;
  return { master: perMin(d.master), agent: perMin(d.agent), apps: perMin(d.apps), otherPct: d.otherPct };
}

async function isolated() {
  const { fork } = require('child_process');
  const kinds = {
    nothing: {},
    heartbeat: { EGG_CLUSTER_RS_HEARTBEAT: '1000' },
    'heartbeat + watchdog': { EGG_CLUSTER_RS_HEARTBEAT: '1000', EGG_CLUSTER_RS_HANG_REPORT: '3000', EGG_CLUSTER_RS_REPORT_DIR: os.tmpdir() },
  };
  const kids = Object.entries(kinds).map(([ name, env ]) => ({
    name,
    child: fork(path.join(__dirname, 'lib', 'heartbeat-child.js'), { env: { ...process.env, ...env }, stdio: 'ignore' }),
  }));
  // past the start-up
  await new Promise(r => setTimeout(r, 3000));
  const c0 = kids.map(k => proc.cpuMs(k.child.pid));
  await new Promise(r => setTimeout(r, ISOLATED_S * 1000));
  const out = kids.map((k, i) => ({
    name: k.name,
    cpuMsPerMin: (proc.cpuMs(k.child.pid) - c0[i]) / ISOLATED_S * 60,
    rssMiB: proc.rssKiB(k.child.pid) / 1024,
  }));
  for (const k of kids) k.child.kill();
  return out;
}

async function one(variant, round, gen) {
  const inst = new bench.Instance('rs', { env: VARIANTS[variant] });
  const run = { variant, round };
  try {
    await inst.start();
    run.readyMs = inst.ready.readyMs;
    run.idle = await idle(inst);
    run.rssMiB = treeRssKiB(inst) / 1024;
    const r = await bench.relay(inst, 16);
    run.relay = { msgsPerS: r.msgsPerS, masterCpuMsPer100k: r.masterCpuMsPer100k, agentCpuMsPer100k: r.agentCpuMsPer100k };
    const c = await bench.http(inst, gen, true);
    run.close = { rps: c.rps, masterCpuPct: c.masterCpuPct };
    const k = await bench.http(inst, gen, false);
    run.keepAlive = { rps: k.rps, masterCpuPct: k.masterCpuPct };
    log(`${variant} round ${round}: idle master ${run.idle.master.toFixed(1)} / agent ${run.idle.agent.toFixed(1)} / apps ${run.idle.apps.toFixed(1)} ms CPU per min, tree RSS ${run.rssMiB.toFixed(1)} MiB; relay 16 B ${Math.round(run.relay.msgsPerS)} msgs/s at ${run.relay.masterCpuMsPer100k.toFixed(0)} ms/100k; close ${Math.round(run.close.rps)} req/s; keep-alive ${Math.round(run.keepAlive.rps)} req/s`);
  } finally {
    await inst.stop();
  }
  return run;
}

const ROWS = [
  [ 'idle: master CPU, ms per minute', r => r.idle.master, 1 ],
  [ 'idle: agent CPU, ms per minute', r => r.idle.agent, 1 ],
  [ 'idle: app workers CPU (2), ms per minute', r => r.idle.apps, 1 ],
  [ 'tree RSS at idle (master, agent, 2 workers), MiB', r => r.rssMiB, 1 ],
  [ 'relay 16 B: msgs/s', r => r.relay.msgsPerS, 0 ],
  [ 'relay 16 B: master CPU ms per 100k msgs', r => r.relay.masterCpuMsPer100k, 0 ],
  [ 'HTTP Connection: close, req/s', r => r.close.rps, 0 ],
  [ 'HTTP keep-alive, req/s', r => r.keepAlive.rps, 0 ],
];


async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-bench-hb-'));
  bench.useTmpDir(tmp);
  const gen = loadgen.detect();
  log(`node ${process.version}, ${os.cpus().length} CPUs, ${ROUNDS} rounds, load generator ${gen.name}`);
  const iso = await isolated();
  const isoText = [ '| one idle child | CPU ms per minute | RSS MiB |', '| --- | --- | --- |',
    ...iso.map(k => `| ${k.name} | ${bench.fmt(k.cpuMsPerMin, 0)} | ${bench.fmt(k.rssMiB, 1)} |`) ].join('\n');
  process.stdout.write(`\n${isoText}\n`);
  const names = Object.keys(VARIANTS);
  const runs = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // rotate the order: no variant always runs first on a machine still cooling down
    const order = names.map((_, i) => names[(i + round - 1) % names.length]);
    for (const v of order) runs.push(await one(v, round, gen));
  }
  const lines = [ `| | ${names.join(' | ')} |`, `| --- |${names.map(() => ' --- |').join('')}` ];
  for (const [ label, pick, d ] of ROWS) {
    const cells = names.map(v => bench.cell(summary(runs.filter(r => r.variant === v).map(pick)), d));
    lines.push(`| ${label} | ${cells.join(' | ')} |`);
  }
  process.stdout.write(`\nnode ${process.version}, ${os.cpus().length} CPUs, ${ROUNDS} rounds, medians [min–max]\n${lines.join('\n')}\n`);
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  const file = path.join(__dirname, 'results', `heartbeat-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify({ node: process.version, cpus: os.cpus().length, isolated: iso, runs }, null, 2));
  process.stdout.write(`raw runs: ${path.relative(process.cwd(), file)}\n`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch(err => {
  bench.killAll();
  console.error(`[bench:heartbeat] failed: ${err && err.stack || err}`);
  process.exitCode = 1;
});
