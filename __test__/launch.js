'use strict';

/**
 * For the launcher tests (launchers.test.js, egg41-launchers.test.js): apps that name this package
 * as their framework as an installed app does, and the probe that tells which files each process
 * of a cluster loaded.
 */

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  ROOT, FIXTURES, copyFixture, getFreePort, runScript, findProcesses, waitDead, get, watchdogOf,
} = require('./helper');

// the egg of each major: egg 3 and egg 4.0 are the root's (egg 4 as the npm alias `egg4`), egg 4.1
// is __test__/egg41's (Node >= 22.18)
const EGG = {
  3: path.join(ROOT, 'node_modules/egg'),
  4: path.join(ROOT, 'node_modules/egg4'),
  41: path.join(__dirname, 'egg41/node_modules/egg'),
};
const EGG41_MODULES = path.join(__dirname, 'egg41/node_modules');
const [ major, minor ] = process.versions.node.split('.').map(Number);
// egg 4.1 and its tools declare Node >= 22.18
const NODE_FOR_EGG41 = major > 22 || (major === 22 && minor >= 18);

const PROBE = path.join(FIXTURES, 'probes/loaded-files.js');
const MOCK_DRIVER = path.join(FIXTURES, 'mock_driver.mjs');

/**
 * A copy of `fixture` whose framework is this package, installed as npm installs an app's
 * dependencies: `node_modules/egg` is the chosen egg, `node_modules/egg-cluster-rs` a copy of this
 * package (not a link: the package's own `require('egg')` finds the app's egg from there, as it
 * does in a real install; its dependencies come from the repo's node_modules above the app).
 * @param {string} fixture - under fixtures/apps
 * @param {string} egg - an egg directory (EGG[3], EGG[4], EGG[41])
 * @return {string} baseDir
 */
function appOn(fixture, egg) {
  const baseDir = copyFixture(fixture);
  const pkgFile = path.join(baseDir, 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  pkg.egg = { framework: 'egg-cluster-rs' };
  fs.writeFileSync(pkgFile, JSON.stringify(pkg));
  const modules = path.join(baseDir, 'node_modules');
  fs.mkdirSync(modules);
  fs.symlinkSync(egg, path.join(modules, 'egg'));
  const copy = path.join(modules, 'egg-cluster-rs');
  fs.mkdirSync(copy);
  for (const name of fs.readdirSync(ROOT)) {
    if ([ 'index.js', 'package.json', 'native.js', 'lib', 'bin' ].includes(name)) {
      fs.cpSync(path.join(ROOT, name), path.join(copy, name), { recursive: true });
    } else if (name.endsWith('.node')) {
      // the binary only needs to be found beside native.js
      fs.symlinkSync(path.join(ROOT, name), path.join(copy, name));
    }
  }
  return baseDir;
}

/**
 * A directory for the probe's records (in the app's copy, removed with it), and the environment
 * that preloads the probe into every Node process started under it (the launcher, the master, its
 * workers).
 * @param {string} baseDir -
 * @return {{dir: string, env: Object}} -
 */
function probe(baseDir) {
  const dir = path.join(baseDir, '.probe');
  fs.mkdirSync(dir);
  return { dir, env: { NODE_OPTIONS: `--require ${PROBE}`, EGG_CLUSTER_RS_TEST_PROBE_DIR: dir } };
}

/**
 * @param {string} dir - a probe's directory
 * @return {Array<{pid: number, ppid: number, argv: string[], files: string[]}>} one per process
 */
function records(dir) {
  return fs.readdirSync(dir).map(name => {
    const [ head, ...files ] = fs.readFileSync(path.join(dir, name), 'utf8').split('\n').filter(Boolean);
    return { ...JSON.parse(head), files };
  });
}

/**
 * The master (the parent of the app workers) loaded none of egg's files, while its app workers,
 * which got egg's classes through this package, did (the probe sees egg where it is loaded), one
 * build of it.
 * @param {string} dir - the probe's directory
 * @param {string} egg - the app's egg directory
 * @param {RegExp} launcher - what the master's command line (argv[1..]) must match: the launcher
 * @return {Object} the master's record
 */
function assertMasterWithoutEgg(dir, egg, launcher) {
  const all = records(dir);
  const apps = all.filter(r => /app_worker\.js$/.test(r.argv[1] || ''));
  assert(apps.length > 0, `no app worker recorded: ${JSON.stringify(all.map(r => r.argv.slice(1, 2)))}`);
  const master = all.find(r => r.pid === apps[0].ppid);
  assert(master, `the app workers' parent ${apps[0].ppid} was not recorded`);
  assert(apps.every(r => r.ppid === master.pid), 'every app worker is a child of one master');
  assert.match(master.argv.slice(1).join(' '), launcher);
  const eggDir = `${fs.realpathSync(egg)}${path.sep}`;
  const fromEgg = files => files.filter(f => f.startsWith(eggDir));
  assert.deepStrictEqual(fromEgg(master.files), [], `the master ${master.pid} loaded egg`);
  for (const app of apps) {
    assert(fromEgg(app.files).length > 0, `app worker ${app.pid} loaded no file of ${eggDir}`);
    // egg 4.0 ships a CommonJS and an ESM build: a worker loads the one the app's own code gets
    // (lib/egg4/framework.js), not both
    const builds = new Set(fromEgg(app.files).map(f => (/\/dist\/(commonjs|esm)\//.exec(f) || [])[1]).filter(Boolean));
    assert(builds.size <= 1, `app worker ${app.pid} loaded two builds of egg: ${[ ...builds ]}`);
  }
  return master;
}

/**
 * `<bin> start --daemon --framework=egg-cluster-rs` of an app, which then serves
 * @param {string} bin - the scripts' bin
 * @param {string} baseDir -
 * @param {Object} env - the launcher's extra environment
 * @return {Promise<{port: number, title: string, master: number}>} -
 */
/**
 * @param {string} bin - the scripts' bin
 * @return {string[]} the execArgv of its `start --daemon`: @eggjs/scripts 4 and 5 need their log files'
 *   handles kept from the GC after Node 24 (fixtures/probes/keep-file-handles.js says why)
 */
function keepFileHandles(bin) {
  const major = Number(process.versions.node.split('.')[0]);
  return /@eggjs[/\\]scripts/.test(bin) && major > 24
    ? [ '--require', path.join(__dirname, 'fixtures/probes/keep-file-handles.js') ]
    : [];
}

async function startDaemon(bin, baseDir, env) {
  const port = await getFreePort();
  const title = `egg-cluster-rs-launch-${process.pid}-${Date.now()}`;
  const stdout = path.join(baseDir, 'logs/master-stdout.log');
  const stderr = path.join(baseDir, 'logs/master-stderr.log');
  const start = runScript(bin, [
    'start', '--daemon', '--framework=egg-cluster-rs', `--title=${title}`, `--port=${port}`, '--workers=1',
    `--stdout=${stdout}`, `--stderr=${stderr}`, baseDir,
  ], { marker: baseDir, home: baseDir, cwd: baseDir, env, execArgv: keepFileHandles(bin) });
  const logs = () => [ stdout, stderr ].map(f => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').slice(-3000) : '')).join('\n');
  assert.deepStrictEqual(await start.waitExit(120000), { code: 0, signal: null }, start.tail() + logs());
  assert.strictEqual((await get(port, '/')).body, 'hi, egg');
  const master = findProcesses(baseDir).filter(p => p.cmdline.includes('start-cluster'));
  assert.strictEqual(master.length, 1, JSON.stringify(master));
  return { port, title, master: master[0].pid };
}

/**
 * SIGKILL the master (and its watchdog, which would SIGKILL the workers a second later): the
 * fixture's workers (EGG_CLUSTER_RS_TEST_ORPHAN) stay. `<bin> stop --title` must find them in its
 * sweep for leftover workers, by their command line, and end them.
 * @param {string} bin - the scripts' bin
 * @param {string} baseDir -
 * @param {string} title -
 * @param {number} master - its pid
 */
async function stopAfterMasterDied(bin, baseDir, title, master) {
  const workers = findProcesses(baseDir).filter(p => p.pid !== master).map(p => p.pid).sort();
  assert.strictEqual(workers.length, 2, 'the agent and an app worker');
  const watchdog = watchdogOf(master);
  assert(watchdog, 'the master has a watchdog');
  process.kill(watchdog, 'SIGKILL');
  process.kill(master, 'SIGKILL');
  await waitDead([ master, watchdog ], 5000);
  const stop = runScript(bin, [ 'stop', `--title=${title}`, '--timeout=100' ], { marker: title, home: baseDir, cwd: baseDir });
  assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
  const found = stop.output.match(/got worker\/agent pids \[([^\]]*)\]/);
  assert(found, `stop found no worker:\n${stop.tail()}`);
  assert.deepStrictEqual(found[1].split(',').map(pid => Number(pid.replace(/"/g, ''))).sort(), workers);
  await waitDead(workers, 30000);
}

/**
 * The mock package's mm.app() or mm.cluster() in fixtures/mock_driver.mjs
 * @param {string} entry - the package's ESM entry file
 * @param {string} kind - 'app' or 'cluster'
 * @param {Object} options - mm's options
 * @param {Object} env -
 * @return {Promise<Object>} {status, text} of GET /
 */
async function mock(entry, kind, options, env) {
  const driver = runScript(MOCK_DRIVER, [ entry, kind, JSON.stringify({ cache: false, coverage: false, ...options }) ], {
    marker: options.baseDir, home: options.baseDir, cwd: options.baseDir, env,
  });
  const { data } = await driver.waitFor('mock-result', 120000);
  assert.strictEqual((await driver.waitExit(60000)).code, 0, driver.tail());
  return data;
}

/**
 * mm.app() of the mock package on a copy of `fixture` on egg `major`, whose framework is this
 * package: the app serves, and the mock's process loaded this package's copy in the app and,
 * through it, the app's egg (and no other)
 * @param {string} entry - the mock package's ESM entry file
 * @param {string} fixture -
 * @param {number} major - 3, 4 or 41 (EGG's keys)
 * @param {string} key - the option naming the framework: egg-mock's `customEgg`, else `framework`
 */
async function mockApp(entry, fixture, major, key) {
  const baseDir = appOn(fixture, EGG[major]);
  const { dir, env } = probe(baseDir);
  const pkg = path.join(baseDir, 'node_modules/egg-cluster-rs');
  const res = await mock(entry, 'app', { baseDir, [key]: pkg }, env);
  assert.deepStrictEqual(res, { status: 200, text: 'hi, egg' });
  const [ driver ] = records(dir).filter(r => r.argv[1] === MOCK_DRIVER);
  assert(driver.files.includes(path.join(fs.realpathSync(pkg), 'index.js')), 'the framework is this package');
  const eggFiles = egg => driver.files.filter(f => f.startsWith(`${fs.realpathSync(EGG[egg])}${path.sep}`));
  assert(eggFiles(major).length > 0, `egg ${major} was loaded`);
  for (const other of Object.keys(EGG).map(Number).filter(egg => egg !== major)) {
    assert.deepStrictEqual(eggFiles(other), [], `egg ${other} was not`);
  }
}

module.exports = {
  EGG, EGG41_MODULES, NODE_FOR_EGG41, appOn, probe, records, assertMasterWithoutEgg, keepFileHandles, startDaemon, stopAfterMasterDied,
  mock, mockApp,
};
