'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `npm run bench:threads`: startMode 'worker_threads' beside 'process', for egg-cluster 2.5 and
 * egg-cluster-rs, on the bench app (bench/fixtures/app) with 2 app workers (threads mode: `ports`
 * with two ports, since egg-cluster runs one thread per port).
 *
 * For each start: time to ready (fork of the runner → its `bench-ready`), the master process's
 * RSS at ready (in threads mode the whole cluster lives in it), the RSS of every process of the
 * cluster summed (the master's children too), and the time from SIGTERM to the master's exit.
 * Runs alternate A B A B; BENCH_QUICK=1 does one start of each, otherwise 3.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork } = require('child_process');
const { performance } = require('perf_hooks');
const proc = require('./lib/proc');
const { freePort } = require('./lib/port');
const { summary } = require('./lib/stats');

const ROOT = path.join(__dirname, '..');
const APP = path.join(__dirname, 'fixtures/app');
const RUNNER = path.join(__dirname, 'run-master.js');
const QUICK = !!process.env.BENCH_QUICK && process.env.BENCH_QUICK !== '0';
const STARTS = QUICK ? 1 : 3;
const LABEL = { 'egg-cluster': 'egg-cluster 2.5', rs: 'egg-cluster-rs' };


async function once(impl, mode, logDir) {
  const ports = [ await freePort(), await freePort() ];
  const options = { baseDir: APP, framework: path.join(ROOT, 'node_modules/egg'), port: ports[0] };
  if (mode === 'worker_threads') Object.assign(options, { startMode: 'worker_threads', ports });
  else options.workers = 2;
  const logFile = path.join(logDir, `${impl}-${mode}-${Date.now()}.log`);
  const fd = fs.openSync(logFile, 'w');
  const t0 = performance.now();
  const child = fork(RUNNER, [ JSON.stringify({ impl, options, egg: 3 }) ], {
    cwd: ROOT,
    stdio: [ 'ignore', fd, fd, 'ipc' ],
    env: { ...process.env, EGG_SERVER_ENV: 'prod', NODE_ENV: 'production' },
  });
  fs.closeSync(fd);
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal, t: performance.now() })));
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${impl} ${mode}: not ready in 120 s, see ${logFile}`)), 120000);
    child.on('message', m => {
      if (m && m.action === 'bench-ready') {
        clearTimeout(timer);
        resolve({ ...m, readyMs: performance.now() - t0 });
      }
    });
    exited.then(e => reject(new Error(`${impl} ${mode}: exited ${JSON.stringify(e)} before ready, see ${logFile}`)));
  });
  const tree = proc.descendants(ready.masterPid);
  const masterKiB = proc.rssKiB(ready.masterPid);
  const totalKiB = [ ready.masterPid, ...tree ].reduce((sum, pid) => sum + (proc.rssKiB(pid) || 0), 0);
  const tKill = performance.now();
  process.kill(ready.masterPid, 'SIGTERM');
  const e = await exited;
  const leftovers = tree.filter(proc.alive);
  for (const pid of leftovers) process.kill(pid, 'SIGKILL');
  return {
    impl, mode,
    readyMs: ready.readyMs,
    processes: 1 + tree.length,
    masterMiB: masterKiB / 1024,
    totalMiB: totalKiB / 1024,
    closeMs: e.t - tKill,
    exit: e.code,
    leftovers: leftovers.length,
  };
}

function fmt(s, digits = 0) {
  if (!s) return 'n/a';
  return `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;
}

async function main() {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-threads-'));
  const runs = [];
  for (let i = 0; i < STARTS; i++) {
    for (const mode of [ 'process', 'worker_threads' ]) {
      for (const impl of [ 'egg-cluster', 'rs' ]) {
        const r = await once(impl, mode, logDir);
        process.stderr.write(`[bench:threads] ${LABEL[impl]} ${mode}: ready ${r.readyMs.toFixed(0)} ms, master ${r.masterMiB.toFixed(1)} MiB, all ${r.totalMiB.toFixed(1)} MiB in ${r.processes} process(es), close ${r.closeMs.toFixed(0)} ms (exit ${r.exit})\n`);
        runs.push(r);
      }
    }
  }
  const rows = [
    [ 'time to ready (ms)', 'readyMs', 0 ],
    [ 'master process RSS at ready (MiB)', 'masterMiB', 1 ],
    [ 'RSS of every process of the cluster (MiB)', 'totalMiB', 1 ],
    [ 'processes', 'processes', 0 ],
    [ 'SIGTERM → master exit (ms)', 'closeMs', 0 ],
  ];
  const cols = [];
  for (const mode of [ 'process', 'worker_threads' ]) for (const impl of [ 'egg-cluster', 'rs' ]) cols.push({ impl, mode });
  const out = [];
  out.push(`| figure (median [min–max], ${STARTS} start(s) each, 2 app workers) | ${cols.map(c => `${LABEL[c.impl]}, ${c.mode}`).join(' | ')} |`);
  out.push(`| --- | ${cols.map(() => '---').join(' | ')} |`);
  for (const [ name, key, digits ] of rows) {
    out.push(`| ${name} | ${cols.map(c => fmt(summary(runs.filter(r => r.impl === c.impl && r.mode === c.mode).map(r => r[key])), digits)).join(' | ')} |`);
  }
  process.stdout.write(`\n${out.join('\n')}\n\nlogs: ${logDir}\n`);
  fs.writeFileSync(path.join(__dirname, 'results', `threads-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ node: process.version, runs }, null, 2));
}

main().catch(err => {
  process.stderr.write(`[bench:threads] ${err.stack || err}\n`);
  process.exit(1);
});
