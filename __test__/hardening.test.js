'use strict';

// Operations hardening (docs/operations-hardening.md): a degraded master says so on the product
// log; the control socket survives a squatted directory and cleans up after dead masters; the
// pid file is never written through a link; the CLI signals one master, never all of them.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  ROOT, TMP, LOG_PREFIX, copyFixture, getFreePort, startMaster, runScript, findProcesses, waitDead, get, logTime, waitUntil,
} = require('./helper');
const { Load } = require('./load');

const CLI = path.join(ROOT, 'bin/egg-cluster-rs.js');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');
const LISTENER = path.join(__dirname, 'fixtures/unix-listener.js');
const PROD = { EGG_SERVER_ENV: 'prod' };
const UID = process.getuid();

/** A fresh directory to serve as the masters' (and the CLI's) TMPDIR. */
function tmpdir() {
  fs.mkdirSync(TMP, { recursive: true });
  return fs.mkdtempSync(path.join(TMP, 'hard-'));
}

/** The environment under which masters and the CLI put control sockets in `tmp`. */
function socketEnv(tmp, more = {}) {
  return { ...PROD, TMPDIR: tmp, XDG_RUNTIME_DIR: undefined, ...more };
}

function warnLine(re) {
  return new RegExp(`${LOG_PREFIX.replace('(?:DEBUG|INFO|WARN|ERROR)', 'WARN')}\\[master\\] ${re.source}`, 'm');
}

/** A process listening on `<dir>/<name>` (default: `<its pid>.sock`), as a master would. */
async function listener(dir, name) {
  const l = runScript(LISTENER, name ? [ dir, name ] : [ dir ], { marker: dir, home: dir });
  await l.waitFor('listening', 20000);
  return l;
}

/** A control socket left behind by a SIGKILLed master: its pid is gone, nobody listens. */
async function staleSocket(dir) {
  const l = await listener(dir);
  l.kill('SIGKILL');
  await l.waitExit(20000);
  const sock = path.join(dir, `${l.pid}.sock`);
  assert(fs.lstatSync(sock).isSocket());
  return { pid: l.pid, sock };
}

describe('operations hardening', () => {
  it('a degraded start says so on the product log: a squatted control-socket dir (private fallback, status still answers), an unusable NOTIFY_SOCKET', async () => {
    const tmp = tmpdir();
    const squatted = path.join(tmp, `egg-cluster-rs-${UID}`);
    if (UID === 0) {
      // another user got there first
      fs.mkdirSync(squatted, { mode: 0o777 });
      fs.chmodSync(squatted, 0o777);
      fs.chownSync(squatted, 65534, 65534);
    } else {
      fs.writeFileSync(squatted, 'not a directory');
    }
    const notify = path.join(tmp, 'no/such/dir/notify');
    const m = await startMaster('basic', { workers: 1 }, { env: socketEnv(tmp, { NOTIFY_SOCKET: notify }) });
    await m.waitReady();
    const fallback = await m.waitFor(warnLine(new RegExp(
      `control socket: ${squatted.replace(/[.]/g, '\\.')} is not a private directory of uid ${UID} .*: using (${tmp}/egg-cluster-rs-${UID}\\.\\w{6}) instead$`)));
    const dir = fallback[1];
    const st = fs.lstatSync(dir);
    assert(st.isDirectory() && st.uid === UID && (st.mode & 0o777) === 0o700, `${dir}: ${st.mode.toString(8)}`);
    assert(fs.lstatSync(path.join(dir, `${m.pid}.sock`)).isSocket());
    await m.waitFor(warnLine(/NOTIFY_SOCKET unusable: cannot send READY=1 to systemd: .*No such file or directory/));
    // the WARN lines go to stdout, after the start lines, once each
    assert.strictEqual(m.lines(/NOTIFY_SOCKET unusable/).length, 1, m.tail());
    assert(m.stdout.indexOf('control socket:') > m.stdout.indexOf('egg start'), m.tail());
    assert(m.stdout.includes('NOTIFY_SOCKET unusable'), m.tail());

    // the CLI finds the master in the fallback
    const cli = runScript(CLI, [ 'status', `--pid=${m.pid}`, '--json' ], { marker: m.baseDir, home: m.baseDir, env: socketEnv(tmp) });
    assert.deepStrictEqual(await cli.waitExit(20000), { code: 0, signal: null }, cli.tail());
    assert.strictEqual(JSON.parse(cli.stdout).master.pid, m.pid);

    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    assert(!fs.existsSync(path.join(dir, `${m.pid}.sock`)), 'socket removed at exit');
    // the squatter's directory was left alone
    assert(UID !== 0 || fs.lstatSync(squatted).uid === 65534);
  });

  it('dead masters\' control sockets: status --pid says the master is gone and removes its socket; a starting master removes the others and keeps live ones', async () => {
    const tmp = tmpdir();
    const dir = path.join(tmp, `egg-cluster-rs-${UID}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    const a = await staleSocket(dir);
    const b = await staleSocket(dir);
    // a live master's socket
    const live = await listener(dir);
    const liveSock = path.join(dir, `${live.pid}.sock`);
    // named after a dead pid, yet listened on (a master of another pid namespace): kept
    const gone = runScript(LISTENER, [ '/nonexistent' ], { marker: dir, home: dir });
    await gone.waitExit(20000);
    const foreign = await listener(dir, `${gone.pid}.sock`);
    const foreignSock = path.join(dir, `${gone.pid}.sock`);
    // another user's stale socket: kept
    let othersSock;
    if (UID === 0) {
      const c = await staleSocket(dir);
      fs.chownSync(c.sock, 65534, 65534);
      othersSock = c.sock;
    }

    const cli = runScript(CLI, [ 'status', `--pid=${a.pid}` ], { marker: dir, home: dir, env: socketEnv(tmp) });
    assert.deepStrictEqual(await cli.waitExit(20000), { code: 1, signal: null }, cli.tail());
    assert.strictEqual(cli.stderr.trim(),
      `egg-cluster-rs: master pid ${a.pid} is gone (no such process); removed its stale control socket ${a.sock}`);
    assert(!fs.existsSync(a.sock), 'the CLI removed the stale socket');

    const m = await startMaster('basic', { workers: 1 }, { env: socketEnv(tmp) });
    await m.waitReady();
    assert(fs.lstatSync(path.join(dir, `${m.pid}.sock`)).isSocket());
    assert(!fs.existsSync(b.sock), 'the master removed the dead master\'s socket');
    assert(fs.lstatSync(liveSock).isSocket(), 'a live master\'s socket is kept');
    assert(fs.lstatSync(foreignSock).isSocket(), 'a socket someone listens on is kept');
    if (othersSock) assert(fs.lstatSync(othersSock).isSocket(), 'another user\'s socket is kept');
    assert.deepStrictEqual(m.lines(/ (WARN|ERROR) \d+ \[master\]/), [], m.tail());

    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    live.kill('SIGTERM');
    foreign.kill('SIGTERM');
    await Promise.all([ live.waitExit(), foreign.waitExit() ]);
  });

  it('pidFile that is a symlink: the link is replaced by the pid file, its target untouched', async () => {
    const baseDir = copyFixture('basic');
    const target = path.join(baseDir, 'precious.txt');
    fs.writeFileSync(target, 'precious');
    const pidFile = path.join(baseDir, 'pids/master.pid');
    fs.mkdirSync(path.dirname(pidFile));
    fs.symlinkSync(target, pidFile);
    const m = await startMaster('basic', { workers: 1, pidFile }, { env: PROD, baseDir });
    await m.waitReady();
    assert.strictEqual(fs.readFileSync(target, 'utf8'), 'precious');
    assert(fs.lstatSync(pidFile).isFile(), 'the link itself was replaced');
    assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(m.pid));
    assert.deepStrictEqual(fs.readdirSync(path.dirname(pidFile)), [ 'master.pid' ], 'no temporary file left');
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    assert(!fs.existsSync(pidFile), 'pid file removed at exit');
    assert.strictEqual(fs.readFileSync(target, 'utf8'), 'precious');
  });

  it('CLI reload/scale: several masters and no selector: listed, none signalled; --pid picks one', async () => {
    const daemons = [];
    try {
      for (let i = 0; i < 2; i++) {
        const baseDir = copyFixture('basic');
        const port = await getFreePort();
        const title = `egg-cluster-rs-hard-${process.pid}-${Date.now()}-${i}`;
        const stdout = path.join(baseDir, 'logs/master-stdout.log');
        const start = runScript(EGG_SCRIPTS, [
          'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=1',
          `--stdout=${stdout}`, `--stderr=${path.join(baseDir, 'logs/master-stderr.log')}`, baseDir,
        ], { marker: baseDir, home: baseDir });
        assert.deepStrictEqual(await start.waitExit(120000), { code: 0, signal: null }, start.tail());
        const master = findProcesses(baseDir).filter(p => p.cmdline.includes('start-cluster'));
        assert.strictEqual(master.length, 1);
        daemons.push({ baseDir, port, title, pid: master[0].pid, log: () => fs.readFileSync(stdout, 'utf8') });
      }
      const [ d0, d1 ] = daemons;

      for (const args of [[ 'reload' ], [ 'scale', 'up' ]]) {
        const cli = runScript(CLI, args, { marker: d0.baseDir, home: d0.baseDir });
        assert.deepStrictEqual(await cli.waitExit(20000), { code: 1, signal: null }, cli.tail());
        assert.match(cli.stderr, /^egg-cluster-rs: \d+ masters found; pick one with --title=T or --pid=N \(nothing was signalled\):$/m);
        for (const d of daemons) assert.match(cli.stderr, new RegExp(`^  pid ${d.pid}  --title=${d.title}  ${d.baseDir}$`, 'm'));
        assert.strictEqual(cli.stdout, '');
      }

      const reload = runScript(CLI, [ 'reload', '--no-wait', `--pid=${d0.pid}` ], { marker: d0.baseDir, home: d0.baseDir });
      assert.deepStrictEqual(await reload.waitExit(20000), { code: 0, signal: null }, reload.tail());
      assert.match(reload.stdout, new RegExp(`sent SIGUSR2 to master pid ${d0.pid}$`, 'm'));
      await waitUntil(() => /\[master\] rolling reload \(SIGUSR2\) done: 1 app worker\(s\) replaced/.test(d0.log()), 60000, 'd0 reloaded');
      const up = runScript(CLI, [ 'scale', 'up', '--no-wait', `--pid=${d1.pid}` ], { marker: d1.baseDir, home: d1.baseDir });
      assert.deepStrictEqual(await up.waitExit(20000), { code: 0, signal: null }, up.tail());
      assert.match(up.stdout, new RegExp(`sent SIGTTIN to master pid ${d1.pid}$`, 'm'));
      await waitUntil(() => findProcesses(d1.baseDir).filter(p => /app_worker\.js/.test(p.cmdline)).length === 2, 60000, 'd1 scaled up');
      // by now, a signal from the refused commands would have shown
      assert.strictEqual(d0.log().match(/rolling reload \(SIGUSR2\) done/g).length, 1, d0.log());
      assert.doesNotMatch(d1.log(), /rolling reload|SIGTTIN|SIGUSR2/, d1.log().replace(/[^]*\n(?=(?:[^\n]*\n){0,20}$)/, ''));
      assert.doesNotMatch(d0.log(), /SIGTTIN/);
      assert.strictEqual((await get(d0.port, '/')).status, 200);

      // a pid that is no master (this test's own process) gets nothing
      const notMaster = runScript(CLI, [ 'reload', `--pid=${process.pid}` ], { marker: d0.baseDir, home: d0.baseDir });
      assert.deepStrictEqual(await notMaster.waitExit(20000), { code: 1, signal: null }, notMaster.tail());
      assert.match(notMaster.stderr, new RegExp(`pid ${process.pid} is not an egg-cluster-rs master`));
    } finally {
      for (const d of daemons) {
        const stop = runScript(EGG_SCRIPTS, [ 'stop', `--title=${d.title}`, '--timeout=1000' ], { marker: d.title, home: d.baseDir });
        assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
        await waitDead(findProcesses(d.baseDir).map(p => p.pid), 15000);
      }
    }
  });

  for (const [ mode, opts ] of [[ 'shared socket', {} ], [ 'sticky', { sticky: true } ]]) {
    it(`shutdownDelay under load (${mode}): /readyz 503 from the signal on, no connection refused during the delay, then the usual close`, async () => {
      const DELAY = 3000;
      const metricsPort = await getFreePort();
      const m = await startMaster('reload', { ...opts, workers: 2, shutdownDelay: DELAY, metrics: { port: metricsPort } }, { env: PROD });
      await m.waitReady();
      const port = m.options.port;
      assert.strictEqual((await get(metricsPort, '/readyz')).status, 200);
      const load = new Load(port, { keepAlive: 2, close: 2 });
      try {
        await load.until(r => r.filter(x => x.pid).length >= 20);
        m.kill('SIGTERM');
        const delayLine = (await m.waitFor(new RegExp(
          `^.* INFO ${m.pid} \\[master\\] shutdownDelay: not ready any more, the workers serve for another ${DELAY}ms before the close$`, 'm')))[0];
        const delayFrom = logTime(delayLine);
        // not ready from the first moment, and all along the delay
        const readyz = [];
        let closeLine;
        while (!(closeLine = m.lines(/\[master\] send kill SIGTERM to app workers/)[0])) {
          const res = await get(metricsPort, '/readyz');
          readyz.push({ status: res.status, t: Date.now() });
        }
        const closeFrom = logTime(closeLine);
        assert(closeFrom - delayFrom >= DELAY - 50, `the close began ${closeFrom - delayFrom}ms after the signal`);
        assert(readyz.length >= 3, JSON.stringify(readyz));
        assert.deepStrictEqual(readyz.filter(r => r.status !== 503 && r.t < closeFrom), [], JSON.stringify(readyz));
        // served throughout the delay, nothing refused or failed
        const during = load.results.filter(r => r.t >= delayFrom && r.t < closeFrom);
        assert(during.filter(r => r.pid).length >= 20, `${during.length} requests during the delay`);
        assert.deepStrictEqual(during.filter(r => r.error).slice(0, 10), [], m.tail(40));
        assert.deepStrictEqual(load.results.filter(r => r.error && r.t < closeFrom).slice(0, 10), []);
      } finally {
        await load.stop();
      }
      const exit = await m.waitExit(30000);
      assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    });
  }

  it('shutdownDelay: a second signal ends the delay; a bad value fails the start naming it', async () => {
    const m = await startMaster('basic', { workers: 1, shutdownDelay: 60000 }, { env: PROD });
    await m.waitReady();
    m.kill('SIGTERM');
    await m.waitFor(/shutdownDelay: not ready any more, the workers serve for another 60000ms/);
    m.kill('SIGINT');
    await m.waitFor(new RegExp(`INFO ${m.pid} \\[master\\] SIGINT during the shutdown delay: closing now$`, 'm'));
    assert.deepStrictEqual(await m.waitExit(30000), { code: 0, signal: null }, m.tail());

    const bad = await startMaster('basic', { workers: 1, shutdownDelay: '5s' }, { env: PROD });
    assert.strictEqual((await bad.waitExit()).code, 1);
    assert.match(bad.output, /options\.shutdownDelay should be a non-negative integer \(ms\), got "5s"/);
    const badEnv = await startMaster('basic', { workers: 1 }, { env: { ...PROD, EGG_CLUSTER_RS_SHUTDOWN_DELAY: '-1' } });
    assert.strictEqual((await badEnv.waitExit()).code, 1);
    assert.match(badEnv.output, /EGG_CLUSTER_RS_SHUTDOWN_DELAY should be a non-negative integer \(ms\), got "-1"/);
  });
});
