'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * Where the time to ready goes: `node bench/start-breakdown.js` starts the bench app (2 app
 * workers, as figure 1) under egg-cluster 2.5 and egg-cluster-rs, alternating, with
 * bench/lib/start-probe.js preloaded into the master and every worker, and prints the median
 * moment of each step, in ms after the master process started, for the agent and for the last
 * app worker to reach it. BENCH_EGG=4 compares with @eggjs/cluster 3; BENCH_QUICK=1 does 2
 * starts each instead of 5; BENCH_WORKERS=N.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork } = require('child_process');
const { summary } = require('./lib/stats');

const ROOT = path.join(__dirname, '..');
const EGG = process.env.BENCH_EGG === '4' ? 4 : 3;
const FRAMEWORK = EGG === 4 ? path.join(ROOT, 'node_modules/egg4')
  : path.dirname(require.resolve('egg/package.json', { paths: [ ROOT ] }));
const QUICK = !!process.env.BENCH_QUICK && process.env.BENCH_QUICK !== '0';
const STARTS = QUICK ? 2 : 5;
const WORKERS = Number(process.env.BENCH_WORKERS) || 2;
const LABEL = { 'egg-cluster': EGG === 4 ? '@eggjs/cluster 3' : 'egg-cluster 2.5', rs: 'egg-cluster-rs' };

const STEPS = [
  [ 'master', 'bootstrap', 'master: Node bootstrap done' ],
  [ 'master', 'main', 'master: run-master.js starts' ],
  [ 'master', 'startCluster', 'master: startCluster() called' ],
  [ 'agent', 'origin', 'agent: process started' ],
  [ 'agent', 'main', 'agent: agent_worker.js starts' ],
  [ 'agent', 'fw-start', 'agent: require(framework) starts' ],
  [ 'agent', 'fw-end', 'agent: framework loaded' ],
  [ 'agent', 'new-end', 'agent: new Agent() returned (sync loader)' ],
  [ 'agent', 'send:agent-start', 'agent: ready, agent-start sent' ],
  [ 'app', 'origin', 'app (last): process started' ],
  [ 'app', 'main', 'app (last): app_worker.js starts' ],
  [ 'app', 'fw-end', 'app (last): framework loaded' ],
  [ 'app', 'go-ahead', 'app (last): go-ahead received (rs)' ],
  [ 'app', 'new-start', 'app (last): new Application()' ],
  [ 'app', 'new-end', 'app (last): new Application() returned (sync loader)' ],
  [ 'app', 'listen', 'app (last): server listening' ],
  [ 'master', 'ready', 'master: ready callback' ],
];

function once(impl) {
  const out = path.join(os.tmpdir(), `start-probe-${process.pid}-${impl}-${Date.now()}.jsonl`);
  const options = { baseDir: path.join(__dirname, 'fixtures', 'app'), framework: FRAMEWORK, workers: WORKERS, port: 0 };
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'run-master.js'), [ JSON.stringify({ impl, options, egg: EGG }) ], {
      cwd: ROOT,
      stdio: [ 'ignore', 'ignore', 'inherit', 'ipc' ],
      env: {
        ...process.env,
        EGG_SERVER_ENV: 'prod',
        NODE_ENV: 'production',
        START_PROBE_OUT: out,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS || ''} --require ${path.join(__dirname, 'lib', 'start-probe.js')}`,
      },
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120000);
    let ready = false;
    child.on('message', m => {
      if (!m || m.action !== 'bench-ready') return;
      ready = true;
      const marks = fs.readFileSync(out, 'utf8').trim().split('\n').map(l => JSON.parse(l));
      const master = marks.find(x => x.role === 'master' && x.mark === 'origin');
      const at = {};
      const set = (role, mark, t) => { at[`${role} ${mark}`] = Math.max(at[`${role} ${mark}`] || -Infinity, t - master.t); };
      for (const x of marks) set(x.role, x.mark, x.t);
      set('master', 'startCluster', m.t - m.startClusterMs);
      set('master', 'ready', m.t);
      child.kill('SIGTERM');
      child.once('exit', () => {
        clearTimeout(timer);
        fs.rmSync(out, { force: true });
        resolve(at);
      });
    });
    child.once('exit', code => {
      if (ready) return;
      clearTimeout(timer);
      reject(new Error(`${impl} master exited (${code}) before ready`));
    });
  });
}

async function main() {
  const runs = { 'egg-cluster': [], rs: [] };
  for (let i = 0; i < STARTS; i++) {
    for (const impl of Object.keys(runs)) {
      runs[impl].push(await once(impl));
      await new Promise(r => setTimeout(r, 300));
    }
  }
  const cell = (impl, key) => {
    const s = summary(runs[impl].map(r => r[key]));
    return s ? `${s.median.toFixed(0)} [${s.min.toFixed(0)}–${s.max.toFixed(0)}]` : '–';
  };
  const rows = STEPS.map(([ role, mark, label ]) => [ label, cell('egg-cluster', `${role} ${mark}`), cell('rs', `${role} ${mark}`) ]);
  const head = [ `ms after the master process started (median [min–max] of ${STARTS}, ${WORKERS} app workers)`, LABEL['egg-cluster'], LABEL.rs ];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)));
  const line = r => r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join(' | ');
  process.stdout.write([ line(head), w.map(n => '-'.repeat(n)).join('-|-'), ...rows.map(line) ].join('\n') + '\n');
}

main().catch(e => {
  console.error(e);
  process.exitCode = 1;
});
