'use strict';

const assert = require('assert');
const path = require('path');
const childProcess = require('child_process');
const { ROOT, REFERENCE, copyFixture, track, makeEnv } = require('./helper');

/**
 * Call createCluster(options) (startCluster started synchronously) in a fresh node process and
 * report whether it threw synchronously (the process exits right after, whatever happened).
 * @param {Object} options -
 * @return {Object} { threw, message, code }
 */
function tryStart(options) {
  const code = `
    const options = JSON.parse(process.argv[1]);
    let out;
    try {
      ${REFERENCE ? "new (require('egg-cluster/lib/master'))(options);" : 'require(process.argv[2]).createCluster(options);'}
      out = { threw: false };
    } catch (err) {
      out = { threw: true, message: err.message, code: err.code };
    }
    process.stdout.write(JSON.stringify(out));
    process.exit(0);
  `;
  const res = childProcess.spawnSync(process.execPath, [ '-e', code, JSON.stringify(options), ROOT ], {
    cwd: ROOT, env: makeEnv({}, ROOT), encoding: 'utf8', timeout: 30000,
  });
  assert.strictEqual(res.status, 0, res.stderr);
  return JSON.parse(res.stdout);
}

describe('options', () => {
  it('a baseDir without package.json throws synchronously, naming package.json', () => {
    const res = tryStart({ baseDir: '/nonexistent/egg-cluster-rs-app' });
    assert.strictEqual(res.threw, true);
    assert.match(res.message, /\/nonexistent\/egg-cluster-rs-app\/package\.json/);
    if (!REFERENCE) assert.strictEqual(res.code, 'ERR_EGG_CLUSTER_OPTIONS');
  });

  it('workers: "abc" throws synchronously, naming options.workers', function() {
    if (REFERENCE) this.skip(); // egg-cluster takes parseInt('abc') = NaN silently
    const baseDir = track(copyFixture('basic'));
    const res = tryStart({ baseDir, workers: 'abc' });
    assert.strictEqual(res.threw, true);
    assert.match(res.message, /options\.workers/);
    assert.strictEqual(res.code, 'ERR_EGG_CLUSTER_OPTIONS');
  });

  it('startMode: an unknown value throws naming options.startMode; worker_threads with a setting it cannot honour throws naming both', function() {
    if (REFERENCE) this.skip(); // egg-cluster runs anything but 'worker_threads' as 'process'
    const baseDir = track(copyFixture('basic'));
    let res = tryStart({ baseDir, startMode: 'proces' });
    assert.strictEqual(res.threw, true);
    assert.strictEqual(res.code, 'ERR_EGG_CLUSTER_OPTIONS');
    assert.match(res.message, /^options\.startMode should be 'process' or 'worker_threads', got "proces"/);
    res = tryStart({ baseDir, startMode: 'worker_threads', maxMemoryRestart: '1G' });
    assert.strictEqual(res.threw, true);
    assert.strictEqual(res.code, 'ERR_EGG_CLUSTER_OPTIONS');
    assert.match(res.message, /^options\.maxMemoryRestart cannot be used with startMode 'worker_threads'/);
    res = tryStart({ baseDir, startMode: 'worker_threads', ports: [ 7001, 'x' ] });
    assert.strictEqual(res.threw, true);
    assert.match(res.message, /^options\.ports\[1\] should be a port number, got "x"/);
  });

  it('an unknown framework throws synchronously', () => {
    const baseDir = track(copyFixture('basic'));
    const res = tryStart({ baseDir, framework: 'egg-cluster-rs-no-such-framework' });
    assert.strictEqual(res.threw, true);
    assert.match(res.message, /egg-cluster-rs-no-such-framework/);
  });
});

describe('startCluster (async)', () => {
  it('is an async function; bad options reject it with the error createCluster throws, and nothing starts', function() {
    if (REFERENCE) this.skip();
    const code = `
      const { startCluster } = require(process.argv[1]);
      const started = startCluster({ baseDir: '/nonexistent/egg-cluster-rs-app' });
      started.then(
        () => process.stdout.write(JSON.stringify({ resolved: true })),
        err => process.stdout.write(JSON.stringify({
          async: require('util').types.isAsyncFunction(startCluster),
          message: err.message,
          code: err.code,
        }))
      );
    `;
    const res = childProcess.spawnSync(process.execPath, [ '-e', code, ROOT ], {
      cwd: ROOT, env: makeEnv({}, ROOT), encoding: 'utf8', timeout: 30000,
    });
    assert.strictEqual(res.status, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.strictEqual(out.async, true);
    assert.match(out.message, /\/nonexistent\/egg-cluster-rs-app\/package\.json/);
    assert.strictEqual(out.code, 'ERR_EGG_CLUSTER_OPTIONS');
  });

  it('an egg 3 launcher that ignores the Promise dies of a bad option with exit code 1 and the error on stderr', function() {
    if (REFERENCE) this.skip();
    const res = childProcess.spawnSync(process.execPath, [ '-e',
      "require(process.argv[1]).startCluster({ workers: 'abc' }, () => {})", ROOT ], {
      cwd: ROOT, env: makeEnv({}, ROOT), encoding: 'utf8', timeout: 30000,
    });
    assert.strictEqual(res.status, 1);
    assert.match(res.stderr, /options\.workers/);
  });
});

describe('index.js', () => {
  function run(code) {
    const res = childProcess.spawnSync(process.execPath, [ '-e', code, ROOT ], {
      cwd: path.join(ROOT, '..'), env: makeEnv({}, ROOT), encoding: 'utf8', timeout: 30000,
    });
    assert.strictEqual(res.status, 0, res.stderr);
    return JSON.parse(res.stdout);
  }

  it('requiring it loads neither egg nor the native addon', () => {
    const loaded = run(`
      const m = require(process.argv[1]);
      const eggDir = require('path').dirname(require.resolve('egg/package.json', { paths: [ process.argv[1] ] }));
      process.stdout.write(JSON.stringify({
        keys: Object.keys(m),
        cache: Object.keys(require.cache),
        egg: Object.keys(require.cache).filter(f => f.startsWith(eggDir + '/')),
      }));
    `);
    assert.deepStrictEqual(loaded.egg, []);
    assert.deepStrictEqual(loaded.cache, [ path.join(ROOT, 'index.js') ]);
    assert.deepStrictEqual(loaded.keys.sort(), [
      'Agent', 'AgentWorkerLoader', 'AppWorkerLoader', 'Application', 'BaseContextClass', 'Boot',
      'Controller', 'Service', 'Subscription', 'start', 'startCluster', 'createCluster', 'addMetricsRegistry',
      // egg 4's
      'Helper', 'Singleton', 'Request', 'Response', 'Context', 'Router', 'EggApplicationCore', 'startEgg', 'HttpClient', 'ContextHttpClient', 'CookieLimitExceedError', 'MessageUnhandledRejectionError',
    ].sort());
  });

  it('ESM: an import loads no egg; the named exports are startCluster, createCluster and default, egg\'s classes are default\'s', () => {
    const names = [ 'start', 'Application', 'Agent', 'AppWorkerLoader', 'AgentWorkerLoader', 'Controller',
      'Service', 'Subscription', 'BaseContextClass', 'Boot' ];
    const file = JSON.stringify(path.join(ROOT, 'index.js'));
    const code = `
      import * as ns from ${file};
      import { createRequire } from 'module';
      const require = createRequire(${file});
      const eggDir = require('path').dirname(require.resolve('egg/package.json'));
      const eggLoaded = () => Object.keys(require.cache).filter(f => f.startsWith(eggDir + '/')).length;
      const before = eggLoaded();
      const egg = require('egg');
      let named;
      try {
        await import('data:text/javascript,' + encodeURIComponent('import { Application } from ' + JSON.stringify('file://' + ${file})));
        named = 'imported';
      } catch (err) {
        named = err.name;
      }
      process.stdout.write(JSON.stringify({
        before,
        startCluster: typeof ns.startCluster,
        sameAsEgg: ${JSON.stringify(names)}.filter(n => ns.default[n] !== undefined && ns.default[n] === egg[n]),
        defaultIsExports: ns.default === require(${file}),
        namespace: Object.keys(ns).sort(),
        named,
      }));
    `;
    const res = childProcess.spawnSync(process.execPath, [ '--input-type=module', '-e', code ], {
      cwd: path.join(ROOT, '..'), env: makeEnv({}, ROOT), encoding: 'utf8', timeout: 30000,
    });
    assert.strictEqual(res.status, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.strictEqual(out.before, 0, 'the import loaded no file of egg');
    assert.strictEqual(out.startCluster, 'function');
    assert.deepStrictEqual(out.sameAsEgg, names);
    assert.strictEqual(out.defaultIsExports, true);
    assert.strictEqual(out.named, 'SyntaxError');
    // Node >= 23 also names a CommonJS module's whole exports object 'module.exports' in its namespace
    const moduleExports = Number(process.versions.node.split('.')[0]) >= 23 ? [ 'module.exports' ] : [];
    assert.deepStrictEqual(out.namespace, [ '__esModule', 'addMetricsRegistry', 'createCluster', 'default', 'startCluster', ...moduleExports ].sort());
  });

  it('re-exports egg 3 lazily', () => {
    const res = run(`
      const m = require(process.argv[1]);
      const egg = require(require.resolve('egg', { paths: [ process.argv[1] ] }));
      const names = [ 'start', 'Application', 'Agent', 'AppWorkerLoader', 'AgentWorkerLoader', 'Controller',
        'Service', 'Subscription', 'BaseContextClass', 'Boot' ];
      process.stdout.write(JSON.stringify({
        same: names.filter(n => m[n] === egg[n] && typeof egg[n] === 'function'),
        native: Object.keys(require.cache).filter(f => /native\\.js$|\\.node$/.test(f)),
      }));
    `);
    assert.strictEqual(res.same.length, 10, JSON.stringify(res));
    assert.deepStrictEqual(res.native, []);
  });
});
