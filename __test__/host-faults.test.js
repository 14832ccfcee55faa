'use strict';

// The host's faults (issue #31): what the master does when the machine under it misbehaves. CI
// runs as root: a scratch tmpfs is mounted where the kernel allows it; where it does not, the
// test says so and is skipped (never silently). The case of a child that stops reading its
// channel while others flood it is backpressure.test.js's. A worker the OOM killer takes is
// moved into a scratch memory cgroup with a limit, below the master's own.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const {
  startMaster, copyFixture, findProcesses, get, request, waitDead, waitUntil, isAlive,
} = require('./helper');
const { Load } = require('./load');

const PROD = { EGG_SERVER_ENV: 'prod' };

function esc(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Lines of the master's output since `from` that match `re`. */
function linesSince(m, from, re) {
  return m.output.slice(from).split('\n').filter(line => re.test(line));
}

/** The master's own status snapshot, over its IPC channel (needs no new fd in the master). */
async function status(m) {
  const mark = m.messages.length;
  m.send({ action: 'runner-status' });
  const msg = await m.waitFor(h => h.messages.slice(mark).find(x => x && x.action === 'runner-status'));
  return msg.data;
}

/** The fds master `pid` holds for its children: pidfds and connected unix sockets above 3. */
function childFds(pid) {
  const connected = new Set();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode [Path]; St 03: connected
    const f = line.trim().split(/\s+/);
    if (f[5] === '03') connected.add(f[6]);
  }
  return fs.readdirSync(`/proc/${pid}/fd`).map(Number).filter(fd => {
    let link;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch (_) {
      return false;
    }
    const socket = /^socket:\[(\d+)\]$/.exec(link);
    return link === 'anon_inode:[pidfd]' || (fd > 3 && socket && connected.has(socket[1]));
  });
}

/** Why a scratch filesystem cannot be mounted here, or null when it can. */
function tmpfsUnavailable() {
  if (process.getuid() !== 0) return 'not root: no tmpfs can be mounted';
  const probe = fs.mkdtempSync(path.join(require('os').tmpdir(), 'egg-cluster-rs-tmpfs-'));
  try {
    execFileSync('mount', [ '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe ], { stdio: 'pipe' });
    execFileSync('umount', [ probe ]);
    return null;
  } catch (err) {
    return `mount -t tmpfs is refused here (${String(err.stderr || err.message).trim()})`;
  } finally {
    fs.rmdirSync(probe);
  }
}

/**
 * A scratch memory cgroup below the one process `pid` is in, limited to `bytes` (no swap):
 * `{ dir, move(pid), remove() }`, or a string saying why the kernel refuses one here.
 */
function scratchMemoryCgroup(pid, bytes) {
  if (process.getuid() !== 0) return 'not root: no memory cgroup can be made';
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map(line => {
    // id parent major:minor root mountpoint options ... - fstype source super
    const [ left, right = '' ] = line.split(' - ');
    const f = left.split(' ');
    const [ fstype, , options = '' ] = right.split(' ');
    return { root: f[3], point: f[4], fstype, options: options.split(',') };
  });
  let dir = null;
  let v2 = false;
  let root = false;
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [ , controllers, where ] = line.split(/:(.*?):/);
    const v1 = controllers.split(',').includes('memory');
    const mount = mounts.find(m => (v1 ? m.fstype === 'cgroup' && m.options.includes('memory') : !controllers && m.fstype === 'cgroup2'));
    if (!mount || (!v1 && controllers)) continue;
    const at = path.join(mount.point, path.relative(mount.root, where));
    if (!v1 && !fs.readFileSync(path.join(at, 'cgroup.controllers'), 'utf8').split(' ').map(c => c.trim()).includes('memory')) continue;
    dir = at;
    v2 = !v1;
    root = at === mount.point;
    break;
  }
  if (!dir) return `process ${pid} is in no memory cgroup (no v1 memory controller, no memory in cgroup2's controllers)`;
  const scratch = path.join(dir, `egg-cluster-rs-oom-${process.pid}`);
  const write = (file, value) => fs.writeFileSync(path.join(scratch, file), String(value));
  try {
    if (v2) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory');
    fs.mkdirSync(scratch);
  } catch (err) {
    return `a memory cgroup cannot be made in ${dir} (${err.message})`;
  }
  const remove = () => fs.rmdirSync(scratch);
  try {
    if (v2) {
      write('memory.max', bytes);
      write('memory.swap.max', 0);
    } else {
      write('memory.limit_in_bytes', bytes);
      // (absent without swap accounting)
      if (fs.existsSync(path.join(scratch, 'memory.memsw.limit_in_bytes'))) write('memory.memsw.limit_in_bytes', bytes);
    }
  } catch (err) {
    remove();
    return `the memory limit of ${scratch} cannot be set (${err.message})`;
  }
  return {
    dir: scratch,
    // below the root cgroup, whose subtree is the host's: the master watches the host's count
    root,
    move: p => write('cgroup.procs', p),
    // a process left in it goes back to where it came from first
    remove() {
      for (const p of fs.readFileSync(path.join(scratch, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          fs.writeFileSync(path.join(dir, 'cgroup.procs'), p);
        } catch (_) {
          // gone meanwhile
        }
      }
      remove();
    },
  };
}

describe('host faults', function() {
  this.timeout(120000);

  it('a worker that forks a grandchild and dies: the orphan is terminated, nothing is left after stop', async () => {
    // each worker starts a process that ignores SIGTERM (fixtures/apps/grandchild)
    const m = await startMaster('grandchild', { workers: 1 }, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: 1000 } });
    await m.waitReady();
    const [ first ] = await m.waitForMessages('grandchild', 1);
    const orphan = first.data.pid;
    const from = m.output.length;
    process.kill(first.data.parent, 'SIGKILL');
    // init has it now: no walk of the master's tree finds it; its environment does
    await m.waitFor(new RegExp(`WARN ${m.pid} \\[master\\] 1 process left behind by dead workers: ${orphan} \\(\\S*node -e .*\\); terminating it \\(SIGKILL after 1000ms\\)`), 30000);
    await waitDead([ orphan ], 10000);
    const second = (await m.waitForMessages('grandchild', 2, null, 60000))[1].data;
    assert(isAlive(second.pid));
    // the live worker's grandchild is not an orphan
    assert.deepStrictEqual(linesSince(m, from, /left behind/).length, 1, m.tail());

    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
    await waitDead([ second.pid ], 5000);
    assert.deepStrictEqual(findProcesses(m.baseDir), []);
  });

  it('a worker the OOM killer takes (a scratch memory cgroup with a limit): the line names the OOM killer and the cgroup, a replacement serves', async function() {
    // two workers: a lone worker's replacement booting for 30 s on a busy machine would fail
    // egg-cluster's health check (no live worker three times in a row: exit 1)
    const m = await startMaster('host-faults', { workers: 2 }, { env: PROD });
    await m.waitReady();
    const port = m.options.port;
    const limit = 96 << 20;
    const cgroup = scratchMemoryCgroup(m.pid, limit);
    if (typeof cgroup === 'string') {
      console.log(`      skipped: ${cgroup}`);
      m.kill('SIGTERM');
      await m.waitExit(30000);
      this.skip();
    }
    try {
      const st = await m.clusterStatus();
      const { pid: victim, id } = st.children.find(c => c.role === 'app');
      const other = st.children.find(c => c.role === 'app' && c.pid !== victim).pid;
      cgroup.move(victim);
      // its new memory is charged to the scratch cgroup: 512 MiB is far past the limit; the
      // other worker answers 409 (each request on a new connection: either may accept it)
      const answer = await waitUntil(async () => {
        const res = await get(port, `/allocate?mb=512&pid=${victim}`).catch(err => ({ status: 0, body: err.message }));
        return res.status !== 409 && res;
      }, 60000, 'the victim taking /allocate');
      assert.doesNotMatch(answer.body, /holds/, 'the limit did not hold');
      const why = cgroup.root ? "the host out of memory: /proc/vmstat's oom_kill moved" : `cgroup memory limit 96 MiB; its OOM kills counted in ${cgroup.dir}`;
      await m.waitFor(new RegExp(`ERROR ${m.pid} nodejs\\.WorkerOutOfMemoryError: \\[master\\] app_worker#${id}:${victim} killed by the kernel's OOM killer \\(${esc(why)}\\)`), 30000);
      // then the death and the refork as usual
      await m.waitFor(new RegExp(`app_worker#${id}:${victim} died \\(code: null, signal: SIGKILL`), 10000);
      await waitUntil(async () => (await m.clusterStatus()).master.serving === 2, 90000, 'a replacement serving');
      const pids = new Set();
      for (let i = 0; i < 100 && pids.size < 2; i++) pids.add(Number((await get(port, '/pid')).body));
      assert.strictEqual(pids.size, 2);
      assert(pids.has(other) && !pids.has(victim), [ ...pids ].join());
    } finally {
      cgroup.remove();
    }
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  it('the master at its fd limit: it serves what it has, retries its spawns without a crash loop, and recovers when fds free up', async () => {
    const m = await startMaster('host-faults', { workers: 2, sticky: true }, { env: PROD });
    await m.waitReady();
    const port = m.options.port;
    const load = new Load(port, { keepAlive: 2, close: 0 });
    await load.until(r => r.length >= 20);

    // The limit at the lowest fd the master holds for a child (its pidfd, its channel: a
    // connected unix socket above the stdio and the parent's channel): every fd below is the
    // master's own for good (the event loops, the listeners), what a dead child frees is above:
    // nothing new can open.
    const limit = Math.min(...childFds(m.pid));
    const [ soft, hard ] = execFileSync('prlimit', [ '--pid', String(m.pid), '--nofile', '--output=SOFT,HARD', '--noheadings' ], { encoding: 'utf8' }).trim().split(/\s+/);
    const from = m.output.length;
    execFileSync('prlimit', [ '--pid', String(m.pid), `--nofile=${limit}:${hard}` ]);

    let restored = false;
    try {
      // a new connection: the master cannot accept it now
      let answered = null;
      const pending = request({ port, path: '/pid', localAddress: '127.0.0.30', timeout: 60000 }).then(
        res => { answered = res; },
        err => { answered = err; });
      const sticky = new RegExp(`WARN ${m.pid} \\[master\\] sticky: cannot accept connections on port ${port}: Too many open files \\(os error 24\\); retrying every 50ms`);
      await m.waitFor(sticky, 30000);
      // A dead worker's replacement cannot be spawned either: no crash of the app's, so no
      // crash loop, retried until the fds are back (#32 item 3, the selfheal branch's wording;
      // before it, 61 'failed to spawn' lines in a millisecond and cfork's crash-loop backoff).
      const [ victim ] = m.workers().app;
      process.kill(victim, 'SIGKILL');
      const failed = new RegExp(`ERROR ${m.pid} \\[master\\] cannot spawn app_worker#\\d+: Too many open files \\(os error 24\\): the master is short of a resource, not a crash of the app; trying again in \\d+ms`);
      await m.waitFor(failed, 30000);
      const held = await waitUntil(async () => {
        const st = await status(m);
        return /^cannot spawn app workers: Too many open files \(os error 24\) \(the master is short of a resource\), trying again in \d+ms$/.test(st.master.reforkHeld || '') && st;
      }, 30000, 'the status to say why a slot is empty');
      assert.strictEqual(held.master.healthy, false);
      // a while at the limit: the connections it has are served, the new one is not
      const n = load.results.length;
      await load.until(r => r.length >= n + 100, 60000);
      assert.strictEqual(answered, null, 'a connection was accepted at the fd limit');

      execFileSync('prlimit', [ '--pid', String(m.pid), `--nofile=${soft}:${hard}` ]);
      restored = true;
      await pending;
      assert.strictEqual(answered.status, 200, String(answered));
      await waitUntil(async () => {
        const st = await status(m);
        return st.master.serving === 2 && st.master.healthy;
      }, 60000, 'two workers serving again');
      // the sticky listener said so once, then a count every 10 s at most; the spawns were
      // retried, not counted as deaths
      const [ , ...later ] = linesSince(m, from, sticky);
      assert(later.every(l => /\(\d+ more failures since the last line\)$/.test(l)), m.tail());
      assert.deepStrictEqual(linesSince(m, from, /failed to spawn|worker died too fast|died \d+ times|crash loop/), [], m.tail());
      // the streak of failed spawns in two lines, not one per attempt
      assert.strictEqual(linesSince(m, from, failed).length, 1, m.tail());
      assert.strictEqual(linesSince(m, from, new RegExp(`INFO ${m.pid} \\[master\\] spawning works again after \\d+ failed attempts? in \\d+ms`)).length, 1, m.tail());
    } finally {
      if (!restored) execFileSync('prlimit', [ '--pid', String(m.pid), `--nofile=${soft}:${hard}` ]);
      await load.stop();
    }
    // only the killed worker's keep-alive client may have lost its request
    assert(load.failures().length <= 1, JSON.stringify(load.failures()));
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  it('run/ full (a tmpfs): a hung worker\'s report fails with a WARN and it is replaced all the same; a pid file there fails the start', async function() {
    const why = tmpfsUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const baseDir = copyFixture('host-faults');
    const run = path.join(baseDir, 'run');
    const m = await startMaster('host-faults', { workers: 2, workerTimeout: 5000 }, { env: PROD, baseDir });
    await m.waitReady();
    const port = m.options.port;
    // egg wrote its files in run/ at the start; from now on the disk is full
    execFileSync('mount', [ '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', run ]);
    try {
      try {
        execFileSync('dd', [ 'if=/dev/zero', `of=${path.join(run, 'fill')}`, 'bs=4k' ], { stdio: 'ignore' });
      } catch (_) {
        // dd stops at ENOSPC: full
      }
      const hung = Number((await get(port, '/block')).body);
      const error = 'No space left on device \\(os error 28\\)';
      await m.waitFor(new RegExp(`WARN ${m.pid} \\[master\\] the hung report of app_worker#\\d+:${hung} could not be written: run/ is not writable \\(${error}\\)`), 60000);
      await m.waitFor(new RegExp(`nodejs\\.WorkerHungError: \\[master\\] app_worker#\\d+:${hung} has not answered for \\d+ s \\(event loop blocked\\); report: not written \\(cannot write to run/: ${error}\\); replacing it`), 30000);
      await waitDead([ hung ], 60000);
      await waitUntil(() => m.workers().app.length === 2, 60000, 'the replacement');
      assert(!fs.existsSync(path.join(run, `hung.${hung}.report.json`)), 'a cut-short report is left');
      const pids = new Set();
      for (let i = 0; i < 50 && pids.size < 2; i++) pids.add(Number((await get(port, '/pid')).body));
      assert.strictEqual(pids.size, 2);
      m.kill('SIGTERM');
      assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());

      // the pid file where the disk is full, then read-only: the start fails and says why
      for (const [ how, error ] of [[ 'full', 'No space left on device \\(os error 28\\)' ], [ 'read-only', 'Read-only file system \\(os error 30\\)' ]]) {
        if (how === 'read-only') execFileSync('mount', [ '-o', 'remount,ro', run ]);
        const pidFile = path.join(run, 'master.pid');
        const p = await startMaster('host-faults', { workers: 1, pidFile }, { env: PROD, baseDir });
        assert.strictEqual((await p.waitExit(30000)).code, 1, p.tail());
        assert.match(p.output, new RegExp(`write pidFile ${esc(pidFile)}: ${error}`), p.tail());
        assert.deepStrictEqual(findProcesses(baseDir), []);
      }
    } finally {
      execFileSync('umount', [ run ]);
    }
  });

  it('the master SIGSTOPped for twice workerTimeout: the workers serve meanwhile, nothing is killed, everything resumes', async () => {
    // Stopped for twice the timeout, every child would be silent past it when the master runs
    // again (its heartbeats unread in the channels): what a 30 s SIGSTOP does at the default
    // 60 s timeout with a shorter wait. HOST_FAULTS_STOP_MS=30000 stops it for the issue's
    // literal 30 s (docs/reliability.md has that run): nothing in the master counts the time
    // stopped but the late check, so the longer stop tests nothing more, at 24 s a Node major.
    const workerTimeout = 3000;
    const stopFor = Number(process.env.HOST_FAULTS_STOP_MS) || 2 * workerTimeout;
    assert(stopFor >= 2 * workerTimeout, 'HOST_FAULTS_STOP_MS: at least twice the 3 s workerTimeout');
    const m = await startMaster('host-faults', { workers: 2, workerTimeout }, { env: PROD });
    await m.waitReady();
    const port = m.options.port;
    const load = new Load(port, { keepAlive: 2, close: 2 });
    await load.until(r => r.length >= 20);
    const before = m.workers();
    const from = m.output.length;
    process.kill(m.pid, 'SIGSTOP');
    let stopped = true;
    try {
      const t0 = Date.now();
      const n = load.results.length;
      // the workers accept on the shared socket by themselves
      await load.until(r => Date.now() - t0 >= stopFor && r.length > n + 100, stopFor + 90000);
      assert.deepStrictEqual(load.failures(), []);
      process.kill(m.pid, 'SIGCONT');
      stopped = false;
      // Its first look at the heartbeats: it knows it was away, and blames no one
      await m.waitFor(new RegExp(`WARN ${m.pid} \\[master\\] this master did not run for \\d+\\.\\d s \\(stopped, or starved of CPU\\): the children's silence is counted from now`), 30000);
      const st = await status(m);
      assert.deepStrictEqual([ st.master.hung, st.master.reforks, st.master.serving, st.master.phase ], [ 0, 0, 2, 'ready' ], JSON.stringify(st));
      assert.deepStrictEqual(m.workers(), before);
      assert.deepStrictEqual(linesSince(m, from, /WorkerHungError|died|watchdog/), []);
    } finally {
      if (stopped) process.kill(m.pid, 'SIGCONT');
    }
    await load.stop();
    load.assertAllOk(m);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });
});
