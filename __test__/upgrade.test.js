'use strict';

// The master upgrade (docs/upgrade.md) with real processes under real load: SIGHUP makes the
// master start a new one with its own command line on its listening sockets; the new tree
// serves the code now on disk and the old one closes, with no failed request, in each
// connection mode. A new tree that fails at boot is stopped and the old one serves on (the
// CLI says why, exit 1). With an IPC parent an upgrade is refused (promise.upgrade()).
//
// The masters here are started as `egg-scripts start --daemon` leaves them: no IPC parent, in a
// session of their own (no controlling terminal, where SIGHUP would be a hangup).
//
// fixtures/apps/reload: GET /pid, /text ("version 1" from a controller); app.js throws at boot
// while `boot-fail` exists in the baseDir.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const childProcess = require('child_process');
const { execFile } = childProcess;
const { Load } = require('./load');
const {
  TS, REFERENCE, ROOT, copyFixture, getFreePort, startMaster, get, isAlive, waitDead, waitUntil, notifyListener, killAll, boundSocket,
} = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };
const CLI = path.join(__dirname, '../bin/egg-cluster-rs.js');
const RUNNER = path.join(__dirname, 'fixtures/start.js');

function masterLine(pid, text, level = '(?:INFO|WARN|ERROR)') {
  return new RegExp(`${TS}${level} ${pid} \\[master\\] ${text}$`, 'm');
}

// a copy of the reload app and a master on it writing its pid to run/master.pid there
async function start(opts, more) {
  const baseDir = copyFixture('reload');
  const pidFile = path.join(baseDir, 'run/master.pid');
  const m = await startMaster(null, { workers: 2, pidFile, ...opts }, { env: PROD, baseDir, ...more });
  return { m, pidFile };
}

function cli(args, env) {
  return new Promise(resolve => {
    execFile(process.execPath, [ CLI, ...args ], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

describe('master upgrade', function() {
  if (REFERENCE) return; // egg-cluster 2.5 has no upgrade

  const loads = [];
  const extra = [];
  afterEach(async () => {
    await Promise.all(loads.splice(0).map(l => l.stop()));
    // a new master lives in its own session: stop it if a test left it
    for (const pid of extra.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {
        // gone
      }
    }
  });

  for (const [ mode, opts ] of [
    [ 'shared socket', {} ],
    [ 'reusePort: true', { reusePort: true } ],
    [ 'sticky: true', { sticky: true } ],
  ]) {
    it(`SIGHUP under load, ${mode}: the new tree serves the new code, the old master exits 0, no failed request`, async () => {
      const metricsPort = await getFreePort();
      const { m, pidFile } = await start({ ...opts, metrics: { port: metricsPort } }, { ipc: false });
      const port = m.options.port;
      await m.waitFor(masterLine(m.pid, 'egg started on http://127\\.0\\.0\\.1:\\d+ \\(\\d+ms\\).*'), 60000);
      assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(m.pid));
      assert.strictEqual((await get(port, '/text')).body, 'version 1');
      const old = m.workers();
      assert.strictEqual(old.app.length, 2);
      assert.strictEqual(old.agent.length, 1);

      const l = new Load(port);
      loads.push(l);
      await l.until(r => r.filter(x => x.pid).length >= 40);
      fs.writeFileSync(path.join(m.baseDir, 'app/controller/home.js'),
        fs.readFileSync(path.join(m.baseDir, 'app/controller/home.js'), 'utf8').replace('version 1', 'version 2'));
      const t0 = Date.now();
      m.kill('SIGHUP');
      const started = await m.waitFor(masterLine(m.pid, 'upgrade: new master pid (\\d+) started, waiting for its ready'));
      const newPid = Number(started[1]);
      extra.push(newPid);
      await m.waitFor(masterLine(newPid, 'egg started on http://127\\.0\\.0\\.1:\\d+ \\(\\d+ms\\).*'), 60000);
      const ready = await m.waitFor(masterLine(m.pid, `upgrade: new master pid ${newPid} is ready after (\\d+)ms; this master closes and leaves the sockets to it`));
      const exit = await m.waitExit(30000);
      assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
      const t1 = Date.now();
      assert(old.app.concat(old.agent).every(pid => !isAlive(pid)), 'the old tree is gone');

      // the new tree: a new agent, new app workers, the new code, the pid file
      assert(isAlive(newPid));
      const now = m.workers();
      assert.strictEqual(now.agent.length, 1, JSON.stringify(now));
      assert.notStrictEqual(now.agent[0], old.agent[0]);
      assert.strictEqual(now.app.length, 2);
      assert(now.app.every(pid => !old.app.includes(pid)));
      assert.strictEqual((await get(port, '/text')).body, 'version 2');
      assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(newPid));
      // the metrics port moved with the sockets: the new master answers on it
      assert.strictEqual((await get(metricsPort, '/readyz')).status, 200);
      assert.doesNotMatch(m.output, /WARN \d+ \[master\]/);
      await l.until(r => r.filter(x => x.t > t1 && now.app.includes(x.pid)).length >= 20);
      await l.stop();
      l.assertAllOk(m);
      console.log('      %s: new master ready after %sms, %d requests during the upgrade, %d in all',
        mode, ready[1], l.count(t0, t1), l.results.length);

      // the new master closes its tree as any master does, and removes its pid file
      process.kill(newPid, 'SIGTERM');
      await waitDead([ newPid, ...now.app, ...now.agent ], 30000);
      assert.match(m.output, masterLine(newPid, 'exit with code:0'));
      assert(!fs.existsSync(pidFile));
    });
  }

  it('a new tree that fails at boot is stopped, the old one serves on; the CLI says why (exit 1); a SIGTERM while the next new tree boots closes both, and says so', async function() {
    this.timeout(180000);
    const { m, pidFile } = await start({}, { ipc: false });
    const port = m.options.port;
    await m.waitFor(masterLine(m.pid, 'egg started on http://127\\.0\\.0\\.1:\\d+ \\(\\d+ms\\).*'), 60000);
    const old = m.workers();
    const l = new Load(port);
    loads.push(l);
    await l.until(r => r.filter(x => x.pid).length >= 40);
    fs.writeFileSync(path.join(m.baseDir, 'boot-fail'), '');

    const res = await cli([ 'upgrade', `--pid=${m.pid}` ]);
    assert.strictEqual(res.code, 1, JSON.stringify(res));
    assert.match(res.stderr, new RegExp(`upgrade of master pid ${m.pid} failed: the new master exited with code 1 before it was ready`));
    const failed = await m.waitFor(masterLine(m.pid, 'upgrade failed \\(new master pid (\\d+)\\): the new master exited with code 1 before it was ready; this master serves on', 'ERROR'));
    const newPid = Number(failed[1]);
    extra.push(newPid);
    await waitDead([ newPid ], 10000);
    // nothing of the new tree is left; the old one is whole and serves
    await waitUntil(() => {
      const w = m.workers();
      return w.agent.length === 1 && w.app.length === 2 && m.children().length === 3;
    }, 15000, 'only the old tree left');
    assert.deepStrictEqual(m.workers(), old);
    const mark = l.results.length;
    await l.until(r => r.length >= mark + 20);
    await l.stop();
    l.assertAllOk(m);
    assert.strictEqual((await get(port, '/text')).body, 'version 1');
    assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(m.pid));
    assert(!m.exited);

    fs.unlinkSync(path.join(m.baseDir, 'boot-fail'));

    // SIGTERM while the next upgrade's new tree boots (held at boot): both close, and the lines
    // say so (not "this master serves on")
    fs.writeFileSync(path.join(m.baseDir, 'boot-hold'), '');
    const from = m.output.length;
    m.kill('SIGHUP');
    const held = await m.waitFor(h => h.output.slice(from).match(masterLine(m.pid, 'upgrade: new master pid (\\d+) started, waiting for its ready')));
    const heldPid = Number(held[1]);
    extra.push(heldPid);
    await m.waitFor(masterLine(heldPid, 'agent_worker#1:\\d+ started \\(\\d+ms\\)'), 60000);
    m.kill('SIGTERM');
    assert.deepStrictEqual(await m.waitExit(30000), { code: 0, signal: null }, m.tail());
    assert.doesNotMatch(m.output.slice(from), /serves on/);
    assert.match(m.output, masterLine(m.pid, `upgrade abandoned: SIGTERM came before new master pid ${heldPid} was ready; it is stopped, and this master closes`, 'WARN'));
    await waitDead([ heldPid ], 30000);
    await waitUntil(() => m.children().length === 0, 30000, 'nothing of either tree left');
  });

  it('promise.upgrade() with an IPC parent is refused and says why; the cluster serves on', async () => {
    const m = await startMaster('reload', { workers: 1 }, { env: PROD });
    await m.waitReady();
    m.send({ action: 'runner-upgrade' });
    const { data } = await m.waitFor('runner-upgraded');
    assert.strictEqual(data.ok, false);
    assert.match(data.error, /^this master has an IPC parent/);
    // the reply (IPC) may overtake the log line (stdout)
    await m.waitFor(masterLine(m.pid, 'upgrade refused: this master has an IPC parent .*', 'WARN'), 10000);
    assert.strictEqual((await get(m.options.port, '/text')).body, 'version 1');
    m.kill('SIGTERM');
    assert.deepStrictEqual(await m.waitExit(30000), { code: 0, signal: null }, m.tail());
  });

  it('under systemd: the socket from LISTEN_FDS survives the upgrade, MAINPID= names the new master, the old one says nothing more', async () => {
    const baseDir = copyFixture('reload');
    const notify = await notifyListener();
    // systemd's socket: bound here, listened on by the master, never accepted on here
    const { handle, port } = boundSocket();
    const env = { ...process.env, HOME: baseDir, LISTEN_FDS: '1', NOTIFY_SOCKET: notify.path, EGG_SERVER_ENV: 'prod' };
    for (const k of Object.keys(env)) if (/^EGG_CLUSTER_RS_(?!TEST)|^NODE_OPTIONS$/.test(k)) delete env[k];
    // as systemd starts a service: LISTEN_PID is the master's pid, a session of its own
    const child = childProcess.spawn('sh', [ '-c', 'export LISTEN_PID=$$; exec "$0" "$@"', process.execPath, RUNNER,
      JSON.stringify({ baseDir, workers: 2, port }) ], { cwd: ROOT, env, detached: true, stdio: [ 'ignore', 'pipe', 'pipe', handle ] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', c => { out += c; });
    child.stderr.on('data', c => { out += c; });
    const { datagrams } = notify;
    let l;
    try {
      const ready = await waitUntil(() => datagrams.find(d => d.startsWith('READY=1')), 60000, 'READY=1');
      assert.strictEqual(ready, `READY=1\nMAINPID=${child.pid}\nSTATUS=2/2 app workers serving`);
      // from now on the master alone holds systemd's socket
      handle.close();
      l = new Load(port);
      loads.push(l);
      await l.until(r => r.filter(x => x.pid).length >= 40);
      const mark = datagrams.length;
      process.kill(child.pid, 'SIGHUP');
      const second = await waitUntil(() => datagrams.slice(mark).find(d => d.startsWith('READY=1')), 60000, 'the new READY=1');
      const newPid = Number(second.match(/MAINPID=(\d+)/)[1]);
      extra.push(newPid);
      assert.notStrictEqual(newPid, child.pid);
      assert.strictEqual(second, `READY=1\nMAINPID=${newPid}\nSTATUS=2/2 app workers serving`);
      await waitUntil(() => child.exitCode !== null, 30000, 'the old master to exit');
      assert.strictEqual(child.exitCode, 0, out);
      assert.match(out, new RegExp(`\\[master\\] upgrade: new master pid ${newPid} is ready after \\d+ms`));
      // the old master sent nothing after the new READY=1: systemd still believes in the service
      const after = datagrams.slice(datagrams.indexOf(second) + 1);
      assert(!after.some(d => d.startsWith('STOPPING=1')), JSON.stringify(after));
      // the new master's environment has no LISTEN_*: its socket came from the old master
      const newEnv = fs.readFileSync(`/proc/${newPid}/environ`, 'utf8').split('\0');
      assert(!newEnv.some(e => /^LISTEN_(FDS|PID|FDNAMES)=/.test(e)), newEnv.filter(e => /^LISTEN_/.test(e)));
      const t1 = Date.now();
      await l.until(r => r.filter(x => x.t > t1 && x.pid).length >= 20);
      await l.stop();
      l.assertAllOk();
      process.kill(newPid, 'SIGTERM');
      await waitUntil(() => datagrams.slice(mark).find(d => d.startsWith('STOPPING=1')), 30000, 'STOPPING=1 from the new master');
      await waitDead([ newPid ], 30000);
      assert.match(out, new RegExp(`INFO ${newPid} \\[master\\] exit with code:0`));
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      notify.close();
      await killAll(baseDir);
      try {
        handle.close();
      } catch (_) {
        // closed above
      }
    }
  });
});
