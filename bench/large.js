'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `node bench/large.js` (part of `npm run bench`): the large app (bench/fixtures/large: TypeScript
 * compiled by tsc, tegg decorators, 30+ plugins, ~550 files, an agent that waits ~2 s on its
 * database at boot) on egg 3 (CJS), egg 4.0 (ESM) and egg 4.1 beta (ESM), each under the stock
 * master its egg depends on (egg-cluster 2.5, @eggjs/cluster 3, @eggjs/cluster 4 beta) and under
 * egg-cluster-rs, alternating, after one unmeasured start of each (warm compile and page caches).
 * Per variant, one table: time to ready and where it goes (the master's own start, the agent's
 * boot, the app workers after `agent-start`, from bench/lib/start-probe.js preloaded into every
 * process), master RSS, the whole tree's RSS, and the CPU each role spent until ready.
 *
 * BENCH_QUICK=1                one measured round per side instead of BENCH_LARGE_ROUNDS (3)
 * BENCH_LARGE_VARIANTS=egg3,egg41  which variants (default egg3,egg40,egg41)
 * BENCH_WORKERS=N              app workers (default 2)
 * BENCH_LARGE_AGENT_WAIT_MS=N  the agent's wait on its database at boot (default 2000)
 * BENCH_LARGE_APP_WAIT_MS=N    each app worker's (default 200)
 * BENCH_LARGE_IMPLS=stock,rs,rs-nowarm  which masters: the stock one, egg-cluster-rs, and
 *                              egg-cluster-rs without its warm start (EGG_CLUSTER_RS_WARM_START=0)
 * egg 4.1 needs Node >= 22.18: on an older Node its masters run on Node 24
 * (scripts/install-nodes.sh, NODES_DIR honoured), and the table says so.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork, execFileSync } = require('child_process');
const { performance } = require('perf_hooks');

const proc = require('./lib/proc');
const { freePort } = require('./lib/port');
const { summary } = require('./lib/stats');
const { startSlowDb } = require('./lib/slow-db');
const { ensureBuilt } = require('./fixtures/large/build');
const { describe } = require('./fixtures/large/generate');
const { waitQuiet, fmt, cell } = require('./index');

const ROOT = path.join(__dirname, '..');
const RUNNER = path.join(__dirname, 'run-master.js');
const PROBE = path.join(__dirname, 'lib', 'start-probe.js');
const RESULTS = path.join(__dirname, 'results');
const QUICK = !!process.env.BENCH_QUICK && process.env.BENCH_QUICK !== '0';
const CFG = {
  rounds: QUICK ? 1 : Number(process.env.BENCH_LARGE_ROUNDS) || 3,
  workers: Number(process.env.BENCH_WORKERS) || 2,
  variants: (process.env.BENCH_LARGE_VARIANTS || 'egg3,egg40,egg41').split(',').map(s => s.trim()).filter(Boolean),
  impls: (process.env.BENCH_LARGE_IMPLS || 'stock,rs').split(',').map(s => s.trim()).filter(Boolean),
  agentWaitMs: Number(process.env.BENCH_LARGE_AGENT_WAIT_MS || 2000),
  appWaitMs: Number(process.env.BENCH_LARGE_APP_WAIT_MS || 200),
  startTimeoutMs: 180000,
  settleMs: 300,
};

const log = (...a) => process.stderr.write(`[bench:large] ${a.join(' ')}\n`);
const sleep = ms => new Promise(r => setTimeout(r, ms));
let tmpDir;
const live = new Set();

/** The node that runs a variant's masters: egg 4.1 needs >= 22.18. */
function nodeFor(variant) {
  const [ major, minor ] = process.versions.node.split('.').map(Number);
  if (variant !== 'egg41' || major > 22 || (major === 22 && minor >= 18)) return { bin: process.execPath, version: process.version, note: '' };
  const bin = execFileSync(path.join(ROOT, 'scripts', 'install-nodes.sh'), [ '24' ], { encoding: 'utf8', stdio: [ 'ignore', 'pipe', 'inherit' ] }).trim();
  const version = execFileSync(bin, [ '-p', 'process.version' ], { encoding: 'utf8' }).trim();
  return { bin, version, note: ` (egg 4.1 needs Node >= 22.18: its masters run on ${version}, the driver on ${process.version})` };
}

/** One start of one master on the large app: time to ready, its breakdown, RSS, CPU; then a stop. */
async function startOnce(impl, build, node, env) {
  const out = path.join(tmpDir, `probe-${impl}-${Date.now()}.jsonl`);
  const logFile = path.join(tmpDir, `${impl}-${path.basename(build.dir)}-${Date.now()}.log`);
  const port = await freePort();
  const options = { baseDir: build.appDir, framework: build.framework, workers: CFG.workers, port };
  const fd = fs.openSync(logFile, 'w');
  const m0 = proc.machine();
  const t0 = performance.now();
  const child = fork(RUNNER, [ JSON.stringify({ impl: impl === 'stock' ? 'stock' : 'rs', options, cluster: build.cluster }) ], {
    cwd: ROOT,
    execPath: node.bin,
    stdio: [ 'ignore', fd, fd, 'ipc' ],
    env: {
      ...process.env,
      ...env,
      ...(impl === 'rs-nowarm' ? { EGG_CLUSTER_RS_WARM_START: '0' } : {}),
      EGG_SERVER_ENV: 'prod',
      NODE_ENV: 'production',
      START_PROBE_OUT: out,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS || ''} --require ${PROBE}`,
    },
  });
  fs.closeSync(fd);
  const entry = { child, tree: [] };
  live.add(entry);
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = await Promise.race([
    new Promise(resolve => child.on('message', m => m && m.action === 'bench-ready' && resolve(m))),
    exited.then(e => ({ exited: e })),
    sleep(CFG.startTimeoutMs).then(() => ({ timeout: true })),
  ]);
  if (!ready.masterPid) {
    child.kill('SIGKILL');
    const tail = fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');
    throw new Error(`${impl} on ${path.basename(build.dir)}: ${ready.timeout ? 'not ready in time' : `master exited ${JSON.stringify(ready.exited)}`}\n${tail}`);
  }
  const readyMs = performance.now() - t0;
  const m1 = proc.machine();
  const masterPid = ready.masterPid;
  const tree = proc.descendants(masterPid);
  entry.tree = tree;
  const rss = pid => (proc.rssKiB(pid) || 0) / 1024;
  const kids = proc.clusterChildren(masterPid);
  const cpuOf = pids => pids.reduce((a, p) => a + (proc.cpuMs(p) || 0), 0);
  const run = {
    impl,
    readyMs,
    masterRssMiB: rss(masterPid),
    treeRssMiB: rss(masterPid) + tree.reduce((a, p) => a + rss(p), 0),
    processes: 1 + tree.length,
    cpuMs: { master: proc.cpuMs(masterPid), agent: cpuOf(kids.agent), apps: cpuOf(kids.app) },
  };
  const treeCpu = run.cpuMs.master + run.cpuMs.agent + run.cpuMs.apps;
  run.otherPct = Math.max(0, (m1.proc - m0.proc) - treeCpu) / readyMs * 100;
  run.phases = phases(out, ready);

  // stop: the master, then every process of its tree
  child.kill('SIGTERM');
  await Promise.race([ exited, sleep(30000) ]);
  const deadline = Date.now() + 15000;
  while (tree.some(proc.alive) && Date.now() < deadline) await sleep(50);
  for (const pid of [ child.pid, ...tree.filter(proc.alive) ]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (_) {
      // gone
    }
  }
  await exited;
  live.delete(entry);
  fs.rmSync(out, { force: true });
  if (!process.env.BENCH_KEEP_LOGS) fs.rmSync(logFile, { force: true });
  await sleep(CFG.settleMs);
  return run;
}

/** The start's phases, in ms, from the probe's marks (epoch ms) and the runner's ready time. */
function phases(file, ready) {
  const marks = fs.readFileSync(file, 'utf8').trim().split('\n').map(l => JSON.parse(l));
  const first = (role, mark) => Math.min(...marks.filter(x => x.role === role && x.mark === mark).map(x => x.t));
  const last = (role, mark) => Math.max(...marks.filter(x => x.role === role && x.mark === mark).map(x => x.t));
  const master = first('master', 'origin');
  const agent = first('agent', 'origin');
  const agentStart = first('agent', 'send:agent-start');
  const appsSpawned = first('app', 'origin');
  const ok = x => (Number.isFinite(x) ? x : null);
  const byPid = new Map();
  for (const x of marks) {
    if (!byPid.has(x.pid)) byPid.set(x.pid, { role: x.role, pid: x.pid });
    byPid.get(x.pid)[x.mark] = Math.round(x.t - master);
  }
  return {
    marks: [ ...byPid.values() ],
    master: ok(agent - master), // the master's own start: Node, the cluster module, startCluster -> agent spawned
    agent: ok(agentStart - agent), // the agent's boot, to agent-start
    apps: ok(ready.t - agentStart), // agent-start -> the last app worker listening -> ready
    total: ok(ready.t - master),
    appsSpawnedAt: ok(appsSpawned - master),
    lastListenAt: ok(last('app', 'listen') - master),
  };
}

const FIGURES = [
  { id: 'L1', label: 'time to ready, fork -> ready (ms)', get: r => r.readyMs, target: 0.8 },
  { id: 'L1a', label: '  master: own start -> agent spawned', get: r => r.phases.master },
  { id: 'L1b', label: '  agent: spawned -> agent-start', get: r => r.phases.agent },
  { id: 'L1c', label: '  app workers: agent-start -> ready', get: r => r.phases.apps },
  { id: 'L2', label: 'master RSS at ready (MiB)', get: r => r.masterRssMiB, digits: 1 },
  { id: 'L3', label: 'RSS of the whole tree at ready (MiB)', get: r => r.treeRssMiB, digits: 1 },
  { id: 'L4', label: 'CPU until ready, whole tree (ms)', get: r => r.cpuMs.master + r.cpuMs.agent + r.cpuMs.apps },
  { id: 'L4a', label: '  of which the master', get: r => r.cpuMs.master },
  { id: 'L4b', label: '  of which the agent', get: r => r.cpuMs.agent },
  { id: 'L4c', label: '  of which the app workers', get: r => r.cpuMs.apps },
];

const LABELS = { stock: null, rs: 'egg-cluster-rs', 'rs-nowarm': 'rs, EGG_CLUSTER_RS_WARM_START=0' };

function table(runs, stockLabel) {
  const impls = CFG.impls;
  const label = impl => LABELS[impl] || stockLabel;
  const others = impls.filter(i => i !== 'stock');
  const head = [ '#', 'figure', ...impls.map(i => `${label(i)} median [min–max]`),
    ...(impls.includes('stock') ? others.map(i => (others.length > 1 ? `${i}/stock` : 'rs/stock')) : []), 'target', 'status' ];
  const rows = FIGURES.map(f => {
    const s = Object.fromEntries(impls.map(i => [ i, summary(runs.filter(r => r.impl === i).map(f.get)) ]));
    const ratios = impls.includes('stock') ? others.map(i => (s.stock && s[i] && s.stock.median ? s[i].median / s.stock.median : null)) : [];
    const main = ratios[0];
    return {
      id: f.id, label: f.label, summaries: s, ratios,
      cells: [ f.id, f.label, ...impls.map(i => cell(s[i], f.digits)), ...ratios.map(x => (x == null ? '–' : `${x.toFixed(2)}×`)),
        f.target ? `≤ ${f.target}×` : '–', f.target && main != null ? (main <= f.target ? 'met' : 'missed') : '–' ],
    };
  });
  const numeric = i => i >= 2 && i < head.length - 2;
  const w = head.map((h, i) => Math.max(h.length, ...rows.map(r => r.cells[i].length)));
  const line = c => c.map((x, i) => (numeric(i) ? x.padStart(w[i]) : x.padEnd(w[i]))).join(' | ').trimEnd();
  return { rows: rows.map(({ cells, ...r }) => r), text: [ line(head), w.map(n => '-'.repeat(n)).join('-|-'), ...rows.map(r => line(r.cells)) ].join('\n') };
}

async function runVariant(variant, db) {
  const build = ensureBuilt(variant, { log });
  const node = nodeFor(variant);
  const d = describe(variant);
  const ports = { LARGE_APP_PROM_SCRAPE_PORT: String(await freePort()), LARGE_APP_PROM_AGG_PORT: String(await freePort()) };
  const env = {
    ...ports,
    LARGE_APP_DB: db.address,
    LARGE_APP_AGENT_WAIT_MS: String(CFG.agentWaitMs),
    LARGE_APP_APP_WAIT_MS: String(CFG.appWaitMs),
    LARGE_APP_LOG_DIR: path.join(tmpDir, `logs-${variant}`),
  };
  const stockLabel = `${build.clusterName} ${build.clusterVersion}`;
  log(`${variant}: egg ${build.eggVersion}, ${stockLabel} vs egg-cluster-rs, node ${node.version}${node.note}`);
  const runs = [];
  for (const impl of CFG.impls) {
    const r = await startOnce(impl, build, node, env);
    log(`  warm-up ${impl}: ready in ${fmt(r.readyMs)} ms (not counted)`);
  }
  for (let round = 1; round <= CFG.rounds; round++) {
    for (const impl of round % 2 ? CFG.impls : [ ...CFG.impls ].reverse()) {
      const before = await waitQuiet();
      const r = await startOnce(impl, build, node, env);
      r.round = round;
      r.before = before;
      runs.push(r);
      log(`  ${impl} round ${round}: ready ${fmt(r.readyMs)} ms (master ${fmt(r.phases.master)}, agent ${fmt(r.phases.agent)}, apps ${fmt(r.phases.apps)}), ` +
        `master RSS ${fmt(r.masterRssMiB, 1)} MiB, tree ${fmt(r.treeRssMiB, 1)} MiB, others used ${fmt(r.otherPct)}% of a core`);
    }
  }
  const t = table(runs, stockLabel);
  const title = `large app, ${variant}: egg ${build.eggVersion} (${d.esm ? 'ESM' : 'CommonJS'}, TypeScript via tsc, ${d.tegg}, ` +
    `${d.plugins + d.builtin} plugins (${d.builtin} of egg's, ${d.plugins} of the app's), ${d.files} TypeScript files), ${CFG.workers} app workers, ` +
    `agent waits ${CFG.agentWaitMs} ms on its database at boot, node ${node.version}${node.note}; ` +
    `${CFG.rounds} starts each after a warm-up start, alternating`;
  const other = summary(runs.map(r => r.otherPct));
  const text = [ title, t.text,
    `other processes used median ${fmt(other.median)}% (max ${fmt(other.max)}%) of a core during the starts${other.max > 25 ? ': a busy machine, figures are noisy' : ''}` ].join('\n');
  return { variant, egg: build.eggVersion, stock: stockLabel, node: node.version, runs, rows: t.rows, text };
}

async function main() {
  if (process.platform !== 'linux') throw new Error('the bench reads /proc: Linux only');
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-bench-large-'));
  const db = await startSlowDb();
  const started = new Date();
  const results = [];
  try {
    for (const v of CFG.variants) results.push(await runVariant(v, db));
  } finally {
    await db.close();
  }
  process.stdout.write(`\n${results.map(r => r.text).join('\n\n')}\n`);
  fs.mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, `large-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify({ meta: { started: started.toISOString(), node: process.version, cpus: os.cpus().length, config: CFG, answered: db.counts }, results }, null, 2));
  process.stdout.write(`raw runs: ${path.relative(process.cwd(), file)}\n`);
  if (process.env.BENCH_KEEP_LOGS) process.stdout.write(`logs: ${tmpDir}\n`);
  else fs.rmSync(tmpDir, { recursive: true, force: true });
}

function killAll() {
  for (const { child, tree } of live) {
    for (const pid of [ child.pid, ...tree ]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {
        // gone
      }
    }
  }
}
// before bench/index.js's own handler, which exits
process.prependListener('SIGINT', killAll);
process.prependListener('SIGTERM', killAll);

main().catch(err => {
  killAll();
  console.error(`[bench:large] failed: ${err && err.stack || err}`);
  if (tmpDir) console.error(`[bench:large] logs kept in ${tmpDir}`);
  process.exitCode = 1;
});
