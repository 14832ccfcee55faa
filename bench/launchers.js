'use strict';

// egg 4.1's rows need Node >= 22.18: the table runs on Node 24 unless BENCH_NODE says otherwise
// (on an older Node those rows are left out, and the table says so)
const [ nodeMajor, nodeMinor ] = process.versions.node.split('.').map(Number);
const NODE_FOR_EGG41 = nodeMajor > 22 || (nodeMajor === 22 && nodeMinor >= 18);
if (!process.env.BENCH_NODE && !NODE_FOR_EGG41) process.env.BENCH_NODE = '24';
require('./lib/node')();

/**
 * `npm run bench:launchers`: the master's RSS at ready under each launcher that starts an egg
 * cluster — egg-scripts / @eggjs/scripts `start --daemon`, egg-bin / @eggjs/bin `dev`, egg-mock /
 * @eggjs/mock `mm.cluster()`, a plain `require` and a plain `import` — with this package as the
 * app's framework ("rs") and with the app's own egg ("stock": egg-cluster 2.5, @eggjs/cluster 3,
 * @eggjs/cluster 4 beta) under the same launcher, alternating rs, stock. Launchers that `import()`
 * the framework read every export an ES module sees; this package shows them only startCluster,
 * createCluster and default (index.js), so its master never loads egg.
 *
 * The apps are __test__/fixtures/apps/launch (CommonJS) and launch-esm, one app worker, installed
 * as an app installs its dependencies (__test__/launch.js appOn); egg 4.1 and its tools are
 * __test__/egg41's. VmRSS of the master (the launcher's start-cluster process, or the process
 * that called startCluster) is read once the cluster is ready. BENCH_LAUNCHER_ROUNDS starts of
 * each (3; BENCH_QUICK=1: 1); BENCH_LAUNCHERS=<regexp> picks rows by name.
 */

const fs = require('fs');
const path = require('path');
const proc = require('./lib/proc');
const { summary } = require('./lib/stats');
const { ROOT, FIXTURES, runScript, findProcesses, killAll, removeTmp, getFreePort } = require('../__test__/helper');
const { EGG, EGG41_MODULES, appOn } = require('../__test__/launch');

const QUICK = !!process.env.BENCH_QUICK && process.env.BENCH_QUICK !== '0';
const ROUNDS = Number(process.env.BENCH_LAUNCHER_ROUNDS) || (QUICK ? 1 : 3);
const PICK = process.env.BENCH_LAUNCHERS ? new RegExp(process.env.BENCH_LAUNCHERS, 'i') : null;
const MOCK_DRIVER = path.join(FIXTURES, 'mock_driver.mjs');
const STOCK = { 3: 'egg-cluster 2.5', 4: '@eggjs/cluster 3', 41: '@eggjs/cluster 4 beta' };

const bin = {
  eggScripts3: path.join(ROOT, 'node_modules/egg-scripts/bin/egg-scripts.js'),
  scripts4: path.join(ROOT, 'node_modules/@eggjs/scripts/bin/run.js'),
  scripts5: path.join(EGG41_MODULES, '@eggjs/scripts/bin/run.js'),
  eggBin6: path.join(ROOT, 'node_modules/egg-bin/dist/bin/cli.js'),
  bin8: path.join(EGG41_MODULES, '@eggjs/bin/bin/run.js'),
  eggMock5: path.join(ROOT, 'node_modules/egg-mock/index.js'),
  mock6: path.join(ROOT, 'node_modules/@eggjs/mock/dist/esm/index.js'),
  mock7: path.join(EGG41_MODULES, '@eggjs/mock/dist/index.js'),
};

// [ name, egg major, fixture, how it starts ]
const LAUNCHERS = [
  [ 'egg-scripts 3 start', 3, 'launch', daemon(bin.eggScripts3) ],
  [ '@eggjs/scripts 4 start, CommonJS app', 4, 'launch', daemon(bin.scripts4) ],
  [ '@eggjs/scripts 4 start, ESM app', 4, 'launch-esm', daemon(bin.scripts4) ],
  [ '@eggjs/scripts 5 start, CommonJS app', 41, 'launch', daemon(bin.scripts5) ],
  [ '@eggjs/scripts 5 start, ESM app', 41, 'launch-esm', daemon(bin.scripts5) ],
  [ 'egg-bin 6 dev', 3, 'launch', dev(bin.eggBin6) ],
  [ '@eggjs/bin 8 dev', 41, 'launch-esm', dev(bin.bin8) ],
  [ 'egg-mock 5 mm.cluster()', 3, 'launch', mockCluster(bin.eggMock5, 'customEgg') ],
  [ '@eggjs/mock 6 mm.cluster() (ESM)', 4, 'launch-esm', mockCluster(bin.mock6, 'framework') ],
  [ '@eggjs/mock 7 mm.cluster()', 41, 'launch-esm', mockCluster(bin.mock7, 'framework') ],
  [ 'require(...).startCluster()', 3, 'launch', plain('require') ],
  [ 'import { startCluster }', 4, 'launch-esm', plain('import') ],
];

// Each start function: (baseDir, framework name, port) => { master: pid once ready, stop() }

function daemon(script) {
  return async (baseDir, framework, port) => {
    const title = `egg-cluster-rs-bench-launchers-${process.pid}-${Date.now()}`;
    const start = runScript(script, [
      'start', '--daemon', `--framework=${framework}`, `--title=${title}`, `--port=${port}`, '--workers=1',
      `--stdout=${path.join(baseDir, 'logs/master-stdout.log')}`, `--stderr=${path.join(baseDir, 'logs/master-stderr.log')}`, baseDir,
    ], { marker: baseDir, home: baseDir, cwd: baseDir, env: { EGG_SERVER_ENV: 'prod' } });
    const exit = await start.waitExit(180000);
    if (exit.code !== 0) throw new Error(`start exited ${JSON.stringify(exit)}\n${start.tail()}`);
    return {
      master: masterOf(baseDir),
      async stop() {
        await runScript(script, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir, cwd: baseDir }).waitExit(60000);
      },
    };
  };
}

function dev(script) {
  return async (baseDir, framework, port) => {
    const m = runScript(script, [ 'dev', `--framework=${framework}`, `--port=${port}`, '--workers=1' ], { marker: baseDir, home: baseDir, cwd: baseDir });
    await m.waitFor(/\[master\] [\w-]+ started on http/, 180000);
    const master = masterOf(baseDir);
    return { master, stop: () => stopMaster(m, master) };
  };
}

function mockCluster(entry, key) {
  return async (baseDir, framework, port) => {
    const options = { baseDir, [key]: path.join(baseDir, 'node_modules', framework), port, cache: false, coverage: false };
    const m = runScript(MOCK_DRIVER, [ entry, 'cluster', JSON.stringify(options) ], {
      marker: baseDir, home: baseDir, cwd: baseDir, env: { MOCK_DRIVER_HOLD: '1' },
    });
    await m.waitFor('mock-result', 180000);
    return {
      master: masterOf(baseDir),
      async stop() {
        m.send({ action: 'close' });
        await m.waitExit(60000);
      },
    };
  };
}

// a launcher file in the app: `node start.js` / `node start.mjs` (not `node -e`, under which the
// stock masters' workers run the launcher again: docs/differences.md)
function plain(how) {
  return async (baseDir, framework, port) => {
    const options = JSON.stringify({ baseDir, port, workers: 1 });
    const file = path.join(baseDir, how === 'require' ? 'start.js' : 'start.mjs');
    fs.writeFileSync(file, how === 'require'
      ? `require('${framework}').startCluster(${options});\n`
      : `import { startCluster } from '${framework}';\nstartCluster(${options});\n`);
    const m = runScript(file, [], { marker: baseDir, home: baseDir, cwd: baseDir, env: { EGG_SERVER_ENV: 'prod' } });
    await m.waitReady(180000);
    return { master: m.pid, stop: () => stopMaster(m, m.pid) };
  };
}

// the launcher's start-cluster process (the scripts', the dev command's, the mock's)
function masterOf(baseDir) {
  const masters = findProcesses(baseDir).filter(p => p.cmdline.includes('start-cluster'));
  if (masters.length !== 1) throw new Error(`expected one master, found ${JSON.stringify(masters)}`);
  return masters[0].pid;
}

async function stopMaster(handle, pid) {
  process.kill(pid, 'SIGTERM');
  await handle.waitFor(() => !proc.alive(pid), 60000);
}

async function once([ name, major, fixture, start ], impl) {
  const baseDir = appOn(fixture, EGG[major]);
  try {
    const { master, stop } = await start(baseDir, impl === 'rs' ? 'egg-cluster-rs' : 'egg', await getFreePort());
    const rssKiB = proc.rssKiB(master);
    await stop();
    return { name, major, impl, rssKiB };
  } finally {
    await killAll(baseDir);
  }
}

function cell(xs) {
  const s = summary(xs.map(kib => kib / 1024));
  return s ? `${s.median.toFixed(1)} [${s.min.toFixed(1)}–${s.max.toFixed(1)}]` : '–';
}

async function main() {
  const rows = LAUNCHERS.filter(([ name, major ]) => (!PICK || PICK.test(name)) && (major !== 41 || NODE_FOR_EGG41));
  const runs = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const row of rows) {
      for (const impl of [ 'rs', 'stock' ]) {
        const r = await once(row, impl);
        process.stderr.write(`[bench:launchers] ${row[0]} (${impl}): master ${(r.rssKiB / 1024).toFixed(1)} MiB\n`);
        runs.push(r);
      }
    }
  }
  const out = [
    `master RSS at ready (MiB, median [min–max] of ${ROUNDS} start(s) each, 1 app worker), Node ${process.version}`,
    '',
    '| launcher | egg | egg-cluster-rs | stock master | rs / stock |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const [ name, major ] of rows) {
    const of = impl => runs.filter(r => r.name === name && r.impl === impl).map(r => r.rssKiB);
    const ratio = summary(of('rs')).median / summary(of('stock')).median;
    out.push(`| ${name} | ${major === 41 ? '4.1' : major === 4 ? '4.0' : '3'} | ${cell(of('rs'))} | ${cell(of('stock'))} (${STOCK[major]}) | ${ratio.toFixed(2)} |`);
  }
  if (!NODE_FOR_EGG41) out.push('', `(egg 4.1's rows left out: egg 4.1 needs Node >= 22.18, this is ${process.version})`);
  process.stdout.write(`\n${out.join('\n')}\n`);
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'results', `launchers-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ node: process.version, runs }, null, 2));
}

main().then(removeTmp, err => {
  process.stderr.write(`[bench:launchers] ${err.stack || err}\n`);
  removeTmp();
  process.exit(1);
});
