'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `npm run bench`: the same egg 3 app (bench/fixtures/app) under egg-cluster 2.5 (A, the
 * devDependency) and egg-cluster-rs (B), alternating A B A B on this machine; prints one table of
 * medians [min–max] and rs/egg-cluster ratios against the targets, and writes every raw run to
 * bench/results/<timestamp>.json. A benchmark, never a test: it fails only when something breaks.
 *
 * BENCH_QUICK=1         one start each, short runs (smoke run, ~1 min)
 * BENCH_LOADGEN=autocannon  use autocannon even when wrk is installed
 * BENCH_STICKY=0        skip the sticky figure (7)
 * BENCH_RS_STICKY=0     skip egg-cluster-rs's side of figure 7
 * BENCH_WORKERS=N       app workers (default 2)
 * BENCH_RELOAD=0       skip the reload-under-load figure (9); BENCH_RELOAD=only runs it alone
 * BENCH_RELOAD_LOAD_S=N how long figure 9's load lasts (default 20 s): raise it with many workers
 * BENCH_KEEP_LOGS=1     keep the masters' output and the app logs (the temp dir is printed)
 * BENCH_SCRAPE=1        egg-cluster-rs only: serve `metrics` and measure relay throughput again
 *                       with a scraper GETting /metrics every 100 ms beside it (logged, in the JSON)
 * BENCH_EGG=4           the same app on egg 4, against @eggjs/cluster 3 (`npm run bench` runs both)
 * BENCH_SCALE=1        also the 16-worker run (S1-S5: ready, RSS, broadcast, close); on by default
 *                       in a full run, off with BENCH_QUICK; BENCH_SCALE=0 skips it, =only runs it alone
 * BENCH_SCALE_WORKERS=N app workers of that run (default 16)
 * BENCH_NODE=24        run everything on that Node major (installed from the npm registry)
 * BENCH_COMPILE_CACHE=0  egg-cluster-rs's workers without the compile cache (Node >= 22)
 * node bench/index.js --report bench/results/<file>.json   re-print the table of a past run
 *
 * See bench/README.md for what each figure is and how it is measured.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork, execFileSync } = require('child_process');
const { performance } = require('perf_hooks');

const proc = require('./lib/proc');
const { freePort } = require('./lib/port');
const loadgen = require('./lib/loadgen');
const { summary } = require('./lib/stats');

const ROOT = path.join(__dirname, '..');
const APP = path.join(__dirname, 'fixtures', 'app');
const RUNNER = path.join(__dirname, 'run-master.js');
const RESULTS = path.join(__dirname, 'results');
// BENCH_EGG=4: the same app on egg 4 (the `egg4` devDependency), @eggjs/cluster 3 as A
const EGG = process.env.BENCH_EGG === '4' ? 4 : 3;
const FRAMEWORK = EGG === 4 ? path.join(ROOT, 'node_modules/egg4')
  : path.dirname(require.resolve('egg/package.json', { paths: [ ROOT ] }));
const A_PACKAGE = EGG === 4 ? '@eggjs/cluster' : 'egg-cluster';

const QUICK = !!process.env.BENCH_QUICK && process.env.BENCH_QUICK !== '0';
const SCALE_ENV = process.env.BENCH_SCALE;
const CFG = {
  quick: QUICK,
  workers: Number(process.env.BENCH_WORKERS) || 2,
  // starts of each master; the first `workloadRounds` of them also run figures 3-8
  starts: QUICK ? 1 : 5,
  workloadRounds: QUICK ? 1 : 3,
  relaySizes: [ 16, 64 * 1024 ],
  relayWindow: 64, // round trips in flight per app worker
  relayMs: QUICK ? 1000 : 3000,
  relayWarmMs: QUICK ? 300 : 500,
  latencyRate: 1000, // round trips per second, all app workers together
  latencyMs: QUICK ? 1000 : 3000,
  bcastSize: 16,
  bcastWindow: 1024, // messages the agent may be ahead of the slowest worker
  bcastAckEvery: 128,
  bcastMs: QUICK ? 1000 : 3000,
  bcastWarmMs: QUICK ? 300 : 500,
  httpConnections: 64,
  httpS: QUICK ? 2 : 5,
  httpWarmS: 1,
  sticky: process.env.BENCH_STICKY !== '0',
  // figure 9, reload under load: keep-alive load bounded in connections and (autocannon) rate,
  // the reload triggered `reloadAfterS` into it; the load lasts `reloadLoadS` in all
  reload: process.env.BENCH_RELOAD !== '0',
  scrape: !!process.env.BENCH_SCRAPE && process.env.BENCH_SCRAPE !== '0',
  scrapeEveryMs: 100,
  reloadOnly: process.env.BENCH_RELOAD === 'only',
  reloadConnections: 16,
  reloadRate: 2000,
  reloadLoadS: Number(process.env.BENCH_RELOAD_LOAD_S) || (QUICK ? 12 : 20),
  reloadAfterS: QUICK ? 1.5 : 2,
  reloadTimeoutMs: 60000,
  // the 16-worker run: starts (each with a broadcast and a timed close), alternating A B
  scale: SCALE_ENV === 'only' || (SCALE_ENV ? SCALE_ENV !== '0' : !QUICK),
  scaleOnly: SCALE_ENV === 'only',
  scaleWorkers: Number(process.env.BENCH_SCALE_WORKERS) || 16,
  scaleStarts: QUICK ? 1 : 3,
  settleMs: 300, // pause after each master is gone, before the next starts
  quietPct: 15, // before each start, wait until others use at most this much of a core...
  quietWaitMs: QUICK ? 3000 : 10000, // ...but no longer than this
  quietWindowMs: QUICK ? 1000 : 3000, // the same before each measured workload (the cluster is idle then)
};
// BENCH_RS_STICKY=0 leaves egg-cluster-rs out of figure 7 (its cells then read RS_STICKY_SKIPPED)
const RS_STICKY = process.env.BENCH_RS_STICKY !== '0';
const RS_STICKY_SKIPPED = 'n/a: skipped (BENCH_RS_STICKY=0)';

const IMPLS = { A: 'egg-cluster', B: 'rs' };
const LABEL = { 'egg-cluster': EGG === 4 ? '@eggjs/cluster 3' : 'egg-cluster 2.5', rs: 'egg-cluster-rs' };

const live = new Set();
let tmpDir;

function log(...args) {
  process.stderr.write(`[bench] ${args.join(' ')}\n`);
}

function sleep(ms) {
  return new Promise(r => setTimeout(r, ms));
}


let seq = 0;
const nextRunId = tag => `${tag}-${process.pid}-${++seq}`;

/** One master process (and its agent + app workers). */
class Instance {
  constructor(impl, { sticky = false, workers = CFG.workers, env = {} } = {}) {
    this.impl = impl;
    this.sticky = sticky;
    this.workers = workers;
    this.env = env;
    this.results = [];
    this.waiters = new Set();
    this.exited = null;
  }

  async start() {
    this.port = await freePort();
    const options = {
      baseDir: APP,
      framework: FRAMEWORK,
      workers: this.workers,
      port: this.port,
    };
    if (this.sticky) options.sticky = true;
    if (CFG.scrape && this.impl === 'rs') {
      this.metricsPort = await freePort();
      options.metrics = { port: this.metricsPort };
    }
    this.logFile = path.join(tmpDir, `${this.impl}${this.sticky ? '-sticky' : ''}-${++seq}.log`);
    const fd = fs.openSync(this.logFile, 'w');
    const m0 = proc.machine();
    const t0 = performance.now();
    this.child = fork(RUNNER, [ JSON.stringify({ impl: this.impl, options, egg: EGG }) ], {
      cwd: ROOT,
      stdio: [ 'ignore', fd, fd, 'ipc' ],
      env: {
        ...process.env,
        EGG_SERVER_ENV: 'prod',
        NODE_ENV: 'production',
        BENCH_TMP: tmpDir,
        ...(process.env.BENCH_COMPILE_CACHE === '0' ? { EGG_CLUSTER_RS_COMPILE_CACHE: '0' } : {}),
        ...this.env,
      },
    });
    fs.closeSync(fd);
    live.add(this);
    this.exitPromise = new Promise(resolve => {
      this.child.once('exit', (code, signal) => {
        this.exited = { code, signal };
        live.delete(this);
        for (const w of this.waiters) w();
        resolve(this.exited);
      });
    });
    this.child.on('message', m => {
      if (!m || typeof m !== 'object') return;
      if (m.action === 'bench-ready' && !this.ready) {
        this.ready = { ...m, readyMs: performance.now() - t0 };
        // right at ready, before any workload
        this.rssKiB = proc.rssKiB(m.masterPid);
      } else if (m.action === 'bench-result') {
        this.results.push(m.data);
      } else if (m.action === 'reload-done' || m.action === 'reload-start') {
        // egg-cluster-rs's rolling reload tells the parent when it starts and ends
        this[m.action === 'reload-done' ? 'reloadDone' : 'reloadStart'] = { data: m.data, t: performance.now() };
      } else {
        return;
      }
      for (const w of this.waiters) w();
    });
    await this.until(() => this.ready, 120000, 'ready');
    this.masterPid = this.ready.masterPid;
    if (this.impl === 'baseline') return this;
    this.children = proc.clusterChildren(this.masterPid);
    {
      // CPU spent starting: the whole tree, and what everything else on the machine did meanwhile
      const m1 = proc.machine();
      const c = this.cpu();
      const tree = c.master + c.agent + c.apps;
      const wallMs = this.ready.readyMs;
      const otherProcs = Math.max(0, (m1.proc - m0.proc) - tree);
      this.startCpu = { wallMs, master: c.master, agent: c.agent, apps: c.apps, otherProcs, otherPct: otherProcs / wallMs * 100 };
    }
    if (this.children.app.length !== this.workers || this.children.agent.length !== 1) {
      throw new Error(`${this.impl}: expected 1 agent and ${this.workers} app workers, found ${JSON.stringify(this.children)}`);
    }
    return this;
  }

  until(pred, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (e) {
          done();
          reject(e);
          return;
        }
        if (v) {
          done();
          resolve(v);
        } else if (this.exited) {
          done();
          reject(new Error(`${this.impl} master exited (${JSON.stringify(this.exited)}) while waiting for ${what}\n${this.logTail()}`));
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`${this.impl}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.logTail()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  logTail() {
    try {
      return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-30).join('\n');
    } catch (_) {
      return '';
    }
  }

  send(msg) {
    this.child.send(msg);
  }

  /** Waits for `n` bench-result messages of this run. */
  async collect(runId, kind, n, timeoutMs) {
    const pick = () => this.results.filter(r => r.runId === runId && r.kind === kind);
    await this.until(() => pick().length >= n, timeoutMs, `${n} ${kind} result(s) of ${runId}`);
    return pick();
  }

  /**
   * utime+stime (ms) of the master, the agent and the app workers, plus what the rest of the
   * machine did meanwhile (to tell a quiet run from one that shared the 2 cores with others).
   */
  cpu() {
    const sum = pids => pids.reduce((a, p) => a + (proc.cpuMs(p) || 0), 0);
    const self = process.cpuUsage();
    return {
      t: performance.now(),
      master: proc.cpuMs(this.masterPid),
      agent: sum(this.children.agent),
      apps: sum(this.children.app),
      driver: (self.user + self.system) / 1000,
      driverChildren: proc.childrenCpuMs(), // the load generator, once it has exited
      machine: proc.machine(),
    };
  }

  static cpuDelta(a, b) {
    const d = {
      wallMs: b.t - a.t,
      master: b.master - a.master,
      agent: b.agent - a.agent,
      apps: b.apps - a.apps,
      driver: b.driver - a.driver,
      loadgen: b.driverChildren - a.driverChildren,
      machineBusy: b.machine.busy - a.machine.busy,
      steal: b.machine.steal - a.machine.steal,
    };
    const ours = d.master + d.agent + d.apps + d.driver + d.loadgen;
    // process time of everything else on the machine (approximate: tick granularity)
    d.otherProcs = Math.max(0, (b.machine.proc - a.machine.proc) - ours);
    d.otherPct = d.otherProcs / d.wallMs * 100;
    d.stealPct = d.steal / d.wallMs * 100;
    return d;
  }

  async stop() {
    if (!this.child) return null;
    const tree = this.masterPid ? proc.descendants(this.masterPid) : [];
    const t0 = performance.now();
    if (!this.exited) {
      this.child.kill('SIGTERM');
      const timeout = sleep(30000).then(() => null);
      if (!await Promise.race([ this.exitPromise, timeout ])) {
        log(`${this.impl} master ${this.masterPid} did not exit 30 s after SIGTERM: SIGKILL`);
        this.child.kill('SIGKILL');
        await this.exitPromise;
      }
    }
    const closeMs = performance.now() - t0;
    // the workers must be gone too: wait a little, then SIGKILL and report what was left
    const workers = this.children ? [ ...this.children.agent, ...this.children.app ] : [];
    const deadline = Date.now() + 10000;
    while (workers.some(proc.alive) && Date.now() < deadline) await sleep(10);
    // SIGTERM -> the last agent or app worker gone (10 ms polling once the master has exited)
    const workersGoneMs = workers.some(proc.alive) ? null : performance.now() - t0;
    while (tree.some(proc.alive) && Date.now() < deadline) await sleep(50);
    const leftovers = tree.filter(proc.alive);
    for (const pid of leftovers) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (_) {
        // gone meanwhile
      }
    }
    if (leftovers.length) log(`WARNING: ${this.impl}: processes left behind after the master exited: ${leftovers.join(', ')} (SIGKILLed)`);
    return { closeMs, workersGoneMs, exit: this.exited, leftovers };
  }

  killNow() {
    const tree = this.masterPid ? proc.descendants(this.masterPid) : [];
    for (const pid of [ this.child && this.child.pid, ...tree ]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch (_) {
        // gone
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// workloads

/**
 * GET /metrics every `everyMs` until stopped; one scrape at a time (a slow answer delays the next).
 * @param {number} port -
 * @param {number} everyMs -
 * @return {{stop: Function}} stop() resolves with {scrapes, errors, ms: summary, bytes}
 */
function scraper(port, everyMs) {
  const http = require('http');
  const times = [];
  let errors = 0;
  let bytes = 0;
  let stopped = false;
  const one = () => new Promise(resolve => {
    const t0 = performance.now();
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: 5000 }, res => {
      res.on('data', c => { bytes += c.length; });
      res.on('end', () => {
        if (res.statusCode === 200) times.push(performance.now() - t0);
        else errors++;
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => { errors++; resolve(); });
  });
  const done = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      await one();
      await sleep(Math.max(0, everyMs - (performance.now() - t0)));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      return { scrapes: times.length, errors, bytes, ms: summary(times) };
    },
  };
}

async function relay(inst, size, { scrape = false } = {}) {
  const quiet = await waitQuiet(CFG.quietWindowMs);
  const once = async durationMs => {
    const runId = nextRunId(`relay${size}`);
    const c0 = inst.cpu();
    const scr = scrape ? scraper(inst.metricsPort, CFG.scrapeEveryMs) : null;
    inst.send({ action: 'bench-relay-start', to: 'app', data: { runId, size, window: CFG.relayWindow, durationMs } });
    const res = await inst.collect(runId, 'relay', CFG.workers, durationMs + 60000);
    const scraped = scr ? await scr.stop() : undefined;
    const cpu = Instance.cpuDelta(c0, inst.cpu());
    const roundTrips = res.reduce((a, r) => a + r.roundTrips, 0);
    const elapsedMs = Math.max(...res.map(r => r.elapsedMs));
    const relayed = roundTrips * 2; // app -> agent and agent -> app: two messages through the master
    return {
      size,
      window: CFG.relayWindow,
      perWorker: res.map(r => ({ pid: r.pid, roundTrips: r.roundTrips, elapsedMs: r.elapsedMs })),
      roundTrips,
      elapsedMs,
      roundTripsPerS: roundTrips / elapsedMs * 1000,
      msgsPerS: relayed / elapsedMs * 1000,
      cpu,
      masterCpuMsPer100k: cpu.master / relayed * 1e5,
      agentCpuMsPer100k: cpu.agent / relayed * 1e5,
      scraped,
    };
  };
  await once(CFG.relayWarmMs);
  return { ...await once(CFG.relayMs), before: quiet };
}

/** Round-trip times app -> master -> agent -> master -> app at CFG.latencyRate, one at a time per worker. */
async function latency(inst) {
  const quiet = await waitQuiet(CFG.quietWindowMs);
  const runId = nextRunId('latency');
  const everyMs = 1000 / CFG.latencyRate * inst.workers;
  const c0 = inst.cpu();
  inst.send({ action: 'bench-latency-start', to: 'app', data: { runId, everyMs, durationMs: CFG.latencyMs } });
  const res = await inst.collect(runId, 'latency', inst.workers, CFG.latencyMs + 60000);
  const cpu = Instance.cpuDelta(c0, inst.cpu());
  const rtts = res.flatMap(r => r.rtts).sort((a, b) => a - b);
  const q = p => rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))];
  return { rate: CFG.latencyRate, n: rtts.length, p50Us: q(0.5), p99Us: q(0.99), maxUs: rtts[rtts.length - 1], cpu, before: quiet };
}

async function broadcast(inst) {
  const quiet = await waitQuiet(CFG.quietWindowMs);
  const once = async durationMs => {
    const runId = nextRunId('bcast');
    const c0 = inst.cpu();
    inst.send({
      action: 'bench-bcast-start',
      to: 'agent',
      data: {
        runId, size: CFG.bcastSize, window: CFG.bcastWindow, ackEvery: CFG.bcastAckEvery,
        durationMs, workers: inst.workers,
      },
    });
    const [ res ] = await inst.collect(runId, 'bcast', 1, durationMs + 60000);
    const cpu = Instance.cpuDelta(c0, inst.cpu());
    return {
      size: CFG.bcastSize,
      sent: res.sent,
      delivered: res.delivered,
      perWorker: res.perWorker,
      elapsedMs: res.elapsedMs,
      deliveredPerS: res.delivered / res.elapsedMs * 1000,
      cpu,
      masterCpuMsPer100k: cpu.master / res.delivered * 1e5,
    };
  };
  await once(CFG.bcastWarmMs);
  return { ...await once(CFG.bcastMs), before: quiet };
}

async function counts(inst) {
  const runId = nextRunId('counts');
  inst.send({ action: 'bench-counts', to: 'app', data: { runId } });
  const res = await inst.collect(runId, 'counts', CFG.workers, 30000);
  return res.map(r => ({ pid: r.pid, hits: r.hits }));
}

async function http(inst, gen, close) {
  const url = `http://127.0.0.1:${inst.port}/`;
  const quiet = await waitQuiet(CFG.quietWindowMs);
  await loadgen.load(gen, { url, connections: CFG.httpConnections, durationS: CFG.httpWarmS, close });
  await counts(inst); // resets the per-worker counters
  const c0 = inst.cpu();
  const r = await loadgen.load(gen, { url, connections: CFG.httpConnections, durationS: CFG.httpS, close });
  const cpu = Instance.cpuDelta(c0, inst.cpu());
  const perWorker = await counts(inst);
  const total = perWorker.reduce((a, w) => a + w.hits, 0);
  const shares = perWorker.map(w => (total ? w.hits / total : 0)).sort((a, b) => b - a);
  if (r.errors || r.non2xx) log(`note: ${inst.impl} ${close ? 'Connection: close' : 'keep-alive'}: ${r.errors} socket errors, ${r.non2xx} non-2xx`);
  return {
    close,
    connections: CFG.httpConnections,
    ...r,
    loadgenCpuPct: r.cpuMs / r.wallMs * 100,
    cpu,
    masterCpuPct: cpu.master / cpu.wallMs * 100,
    perWorker,
    shares,
    busiestShare: shares[0],
    before: quiet,
  };
}

/**
 * Waits (up to CFG.quietWaitMs) until the machine is nearly idle, so a start does not share the
 * cores with a build or a test suite that happens to run; returns what it saw.
 */
async function waitQuiet(maxMs = CFG.quietWaitMs) {
  const t0 = Date.now();
  let busyPct;
  for (;;) {
    const a = proc.machine();
    await sleep(250);
    const b = proc.machine();
    busyPct = (b.busy - a.busy) / (b.total - a.total) * 100 * os.cpus().length;
    if (busyPct <= CFG.quietPct || Date.now() - t0 >= maxMs) break;
  }
  const waitedMs = Date.now() - t0;
  if (busyPct > CFG.quietPct && maxMs === CFG.quietWaitMs) {
    log(`WARNING: the machine is busy with other work (${busyPct.toFixed(0)}% of a core used by others after ${(waitedMs / 1000).toFixed(0)} s): figures will be noisy`);
  }
  return { busyPct, waitedMs };
}

async function runInstance(impl, round, withWorkloads, gen) {
  const inst = new Instance(impl);
  const run = { impl, round, workers: CFG.workers };
  run.before = await waitQuiet();
  try {
    await inst.start();
    Object.assign(run, {
      masterPid: inst.masterPid,
      readyMs: inst.ready.readyMs,
      startClusterMs: inst.ready.startClusterMs,
      requireMs: inst.ready.requireMs,
      rssKiB: inst.rssKiB,
      startCpu: inst.startCpu,
    });
    log(`${LABEL[impl]} round ${round}: ready in ${inst.ready.readyMs.toFixed(0)} ms, master RSS ${(inst.rssKiB / 1024).toFixed(1)} MiB`);
    if (withWorkloads) {
      run.relay = {};
      for (const size of CFG.relaySizes) {
        run.relay[size] = await relay(inst, size);
        log(`  relay ${size} B: ${fmt(run.relay[size].msgsPerS)} msgs/s, master ${run.relay[size].masterCpuMsPer100k.toFixed(0)} ms CPU/100k`);
      }
      if (CFG.scrape && inst.metricsPort) {
        run.relayScrape = {};
        for (const size of CFG.relaySizes) {
          const r = run.relayScrape[size] = await relay(inst, size, { scrape: true });
          const sc = r.scraped;
          log(`  relay ${size} B with /metrics every ${CFG.scrapeEveryMs} ms: ${fmt(r.msgsPerS)} msgs/s (${(r.msgsPerS / run.relay[size].msgsPerS * 100).toFixed(0)}% of without), master ${r.masterCpuMsPer100k.toFixed(0)} ms CPU/100k; ${sc.scrapes} scrapes, ${sc.errors} errors, scrape median ${sc.ms ? sc.ms.median.toFixed(2) : '-'} ms max ${sc.ms ? sc.ms.max.toFixed(2) : '-'} ms`);
        }
      }
      run.latency = await latency(inst);
      log(`  latency at ${CFG.latencyRate} msgs/s: p50 ${run.latency.p50Us.toFixed(0)} µs, p99 ${run.latency.p99Us.toFixed(0)} µs (${run.latency.n} round trips)`);
      run.bcast = await broadcast(inst);
      log(`  broadcast: ${fmt(run.bcast.deliveredPerS)} delivered/s`);
      run.httpClose = await http(inst, gen, true);
      log(`  HTTP Connection: close: ${fmt(run.httpClose.rps)} req/s, master CPU ${run.httpClose.masterCpuPct.toFixed(1)}%, spread ${run.httpClose.shares.map(s => (s * 100).toFixed(0)).join('/')}`);
      run.httpKeepAlive = await http(inst, gen, false);
      log(`  HTTP keep-alive: ${fmt(run.httpKeepAlive.rps)} req/s, spread ${run.httpKeepAlive.shares.map(s => (s * 100).toFixed(0)).join('/')}`);
    }
  } finally {
    run.stop = await inst.stop();
    await sleep(CFG.settleMs);
  }
  return run;
}

/** Text appended to the master's log file since byte `offset`. */
function readFrom(file, offset) {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size <= offset) return '';
    const buf = Buffer.alloc(size - offset);
    fs.readSync(fd, buf, 0, buf.length, offset);
    return buf.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Figure 9, reload under load: a bounded keep-alive load runs; `reloadAfterS` into it the driver
 * triggers a reload of the app workers: SIGUSR2 to egg-cluster-rs's master (its rolling reload,
 * what `egg-cluster-rs reload` sends), `{action: 'reload-worker', to: 'master'}` on egg-cluster
 * 2.5's IPC channel (its only reload: cluster-reload, what egg-development triggers). Measured on
 * the driver's clock, by polling every 10 ms: the N-th `app_worker#I:PID started at` line the
 * master logs after the trigger (the last new worker listening), and the moment every old app
 * worker is gone; and the load generator's errors + timeouts + non-2xx over the whole load.
 */
async function reloadUnderLoad(inst, gen) {
  const quiet = await waitQuiet(CFG.quietWindowMs);
  const url = `http://127.0.0.1:${inst.port}/`;
  const oldApps = proc.clusterChildren(inst.masterPid).app;
  const loadP = loadgen.load(gen, {
    url, connections: CFG.reloadConnections, durationS: CFG.reloadLoadS, close: false, rate: CFG.reloadRate,
  });
  let loadDone = false;
  loadP.then(() => { loadDone = true; }, () => { loadDone = true; });
  await sleep(CFG.reloadAfterS * 1000);
  const offset = fs.statSync(inst.logFile).size;
  const t0 = performance.now();
  if (inst.impl === 'rs') process.kill(inst.masterPid, 'SIGUSR2');
  else inst.send({ action: 'reload-worker', to: 'master' });
  let listeningMs = null;
  let oldGoneMs = null;
  let text = '';
  for (;;) {
    const t = performance.now() - t0;
    text += readFrom(inst.logFile, offset + Buffer.byteLength(text));
    const started = text.match(/app_worker#\d+:\d+ started at/g) || [];
    if (listeningMs == null && started.length >= CFG.workers) listeningMs = t;
    if (oldGoneMs == null && !oldApps.some(proc.alive)) oldGoneMs = t;
    const rsDone = inst.impl !== 'rs' || inst.reloadDone;
    if (listeningMs != null && oldGoneMs != null && rsDone) break;
    if (inst.exited) throw new Error(`${inst.impl} master exited during the reload\n${inst.logTail()}`);
    if (t > CFG.reloadTimeoutMs) {
      log(`WARNING: ${inst.impl}: reload not complete after ${CFG.reloadTimeoutMs} ms (listening: ${listeningMs}, old gone: ${oldGoneMs})`);
      break;
    }
    await sleep(10);
  }
  const outlasted = loadDone;
  const r = await loadP;
  const after = proc.clusterChildren(inst.masterPid).app;
  const done = /rolling reload \(SIGUSR2\) (done: (\d+) app worker\(s\) replaced \((\d+)ms\)|failed: .*)/.exec(text);
  const failed = r.errors + r.non2xx;
  if (outlasted) log(`WARNING: ${inst.impl}: the reload outlasted the load (${CFG.reloadLoadS} s): raise reloadLoadS`);
  return {
    connections: CFG.reloadConnections,
    rate: gen.name === 'autocannon' ? CFG.reloadRate : null,
    triggerAtS: CFG.reloadAfterS,
    ...r,
    failed,
    listeningMs,
    oldGoneMs,
    outlasted,
    oldApps,
    appsAfter: after,
    appsAfterCount: after.length,
    replacedAll: oldApps.every(p => !after.includes(p)),
    // egg-cluster-rs's own account: its `done (Xms)` line and the reload-done message
    rsDoneLine: done ? done[0] : null,
    rsDoneMs: done && done[3] ? Number(done[3]) : null,
    rsReloadDoneMsgMs: inst.reloadDone ? inst.reloadDone.t - t0 : null,
    rsReloadDone: inst.reloadDone ? inst.reloadDone.data : null,
    before: quiet,
  };
}

async function runReload(impl, round, gen) {
  const inst = new Instance(impl);
  const run = { impl, round, reload: true, workers: CFG.workers };
  run.before = await waitQuiet();
  try {
    await inst.start();
    run.readyMs = inst.ready.readyMs;
    run.reloadLoad = await reloadUnderLoad(inst, gen);
    const x = run.reloadLoad;
    log(`${LABEL[impl]} reload round ${round}: ${x.failed} failed of ${x.requests} requests (${x.errors} socket errors, ${x.non2xx} non-2xx), ` +
      `${CFG.workers} new workers listening after ${fmt(x.listeningMs)} ms, old ones gone after ${fmt(x.oldGoneMs)} ms, ` +
      `${x.appsAfterCount} app workers after${x.rsDoneLine ? `; master: ${x.rsDoneLine}` : ''}`);
  } finally {
    run.stop = await inst.stop();
    await sleep(CFG.settleMs);
  }
  return run;
}

/**
 * The 16-worker run (S1-S5): a start, a broadcast from the agent to every app worker, then the
 * close, timed from SIGTERM to the master's exit and to the last worker gone.
 */
async function runScale(impl, round) {
  const inst = new Instance(impl, { workers: CFG.scaleWorkers });
  const run = { impl, round, scale: true, workers: CFG.scaleWorkers };
  run.before = await waitQuiet();
  try {
    await inst.start();
    Object.assign(run, {
      masterPid: inst.masterPid,
      readyMs: inst.ready.readyMs,
      startClusterMs: inst.ready.startClusterMs,
      rssKiB: inst.rssKiB,
      startCpu: inst.startCpu,
    });
    run.bcast = await broadcast(inst);
    // the close is timed on an idle cluster, like the start
    await waitQuiet(CFG.quietWindowMs);
  } finally {
    run.stop = await inst.stop();
    await sleep(CFG.settleMs);
  }
  log(`${LABEL[impl]} ${CFG.scaleWorkers} workers round ${round}: ready in ${fmt(run.readyMs)} ms, master RSS ${fmt(run.rssKiB / 1024, 1)} MiB, ` +
    `broadcast ${fmt(run.bcast.deliveredPerS)} delivered/s at ${fmt(run.bcast.masterCpuMsPer100k)} ms master CPU/100k, ` +
    `close: master gone ${fmt(run.stop.closeMs)} ms, every worker gone ${fmt(run.stop.workersGoneMs)} ms`);
  return run;
}

async function runSticky(impl, round, gen) {
  const inst = new Instance(impl, { sticky: true });
  const run = { impl, round, sticky: true, workers: CFG.workers };
  run.before = await waitQuiet();
  try {
    await inst.start();
    run.readyMs = inst.ready.readyMs;
    run.stickyClose = await http(inst, gen, true);
    log(`${LABEL[impl]} sticky round ${round}: ${fmt(run.stickyClose.rps)} conn/s, master CPU ${run.stickyClose.masterCpuPct.toFixed(1)}%, spread ${run.stickyClose.shares.map(s => (s * 100).toFixed(0)).join('/')}`);
  } finally {
    run.stop = await inst.stop();
    await sleep(CFG.settleMs);
  }
  return run;
}

// ---------------------------------------------------------------------------------------------
// the table

function fmt(x, digits = 0) {
  if (x == null || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const FIGURES = [
  { id: '1', label: 'time to ready, fork -> bench-ready (ms)', get: r => r.readyMs, digits: 0, target: [ '<=', 0.75 ], starts: true },
  { id: '1b', label: '  of which startCluster -> callback (ms)', get: r => r.startClusterMs, digits: 0, starts: true },
  { id: '2', label: 'master RSS at ready (MiB)', get: r => r.rssKiB / 1024, digits: 1, target: [ '<=', 0.5 ], starts: true },
  { id: '3a', label: 'relay 16 B: msgs/s relayed', get: r => r.relay && r.relay[16].msgsPerS, target: [ '>=', 3 ] },
  { id: '3b', label: 'relay 16 B: master CPU ms / 100k msgs', get: r => r.relay && r.relay[16].masterCpuMsPer100k, target: [ '<=', 0.1 ] },
  { id: '3c', label: 'relay 64 KiB: msgs/s relayed', get: r => r.relay && r.relay[65536].msgsPerS, target: [ '>=', 3 ] },
  { id: '3d', label: 'relay 64 KiB: master CPU ms / 100k msgs', get: r => r.relay && r.relay[65536].masterCpuMsPer100k, target: [ '<=', 0.1 ] },
  { id: '3e', label: 'round trip at 1,000/s, p50 (µs)', get: r => r.latency && r.latency.p50Us, target: [ '<=', 1 ] },
  { id: '3f', label: 'round trip at 1,000/s, p99 (µs)', get: r => r.latency && r.latency.p99Us, target: [ '<=', 1 ] },
  { id: '4', label: 'broadcast agent -> apps: delivered/s', get: r => r.bcast && r.bcast.deliveredPerS },
  { id: '4b', label: 'broadcast: master CPU ms / 100k delivered', get: r => r.bcast && r.bcast.masterCpuMsPer100k },
  { id: '5', label: 'HTTP Connection: close: req/s', get: r => r.httpClose && r.httpClose.rps, target: [ '>=', 1.3 ] },
  { id: '5b', label: 'HTTP close: master CPU (% of a core)', get: r => r.httpClose && r.httpClose.masterCpuPct, digits: 1, absTarget: [ '<=', 1, '≈0 (rs ≤ 1%)' ] },
  { id: '5c', label: 'HTTP close: load generator CPU (% core)', get: r => r.httpClose && r.httpClose.loadgenCpuPct, digits: 0 },
  { id: '6', label: 'HTTP keep-alive: req/s', get: r => r.httpKeepAlive && r.httpKeepAlive.rps },
  { id: '6b', label: 'HTTP keep-alive: master CPU (% core)', get: r => r.httpKeepAlive && r.httpKeepAlive.masterCpuPct, digits: 1 },
  { id: '6c', label: 'HTTP keep-alive: load gen CPU (% core)', get: r => r.httpKeepAlive && r.httpKeepAlive.loadgenCpuPct, digits: 0 },
  // Every wrk connection comes from 127.0.0.1, so sticky mode sends all of them to ONE worker on
  // both sides and figure 7 is bounded by that worker. 7c is what the master's accept path could
  // sustain: connections handed over per second of master CPU.
  { id: '7', label: 'sticky, Connection: close: conn/s', get: r => r.stickyClose && r.stickyClose.rps, sticky: true },
  { id: '7b', label: 'sticky: master CPU µs / connection', get: r => r.stickyClose && r.stickyClose.cpu.master * 1000 / Math.max(1, r.stickyClose.requests), digits: 1, sticky: true },
  { id: '7c', label: 'sticky: accept path, conn / master CPU s', get: r => r.stickyClose && r.stickyClose.requests / Math.max(0.001, r.stickyClose.cpu.master / 1000), target: [ '>=', 2 ], sticky: true },
  { id: '8', label: 'spread under (5): busiest worker share %', get: r => r.httpClose && r.httpClose.busiestShare * 100, digits: 1 },
  { id: '8b', label: 'spread under (6): busiest worker share %', get: r => r.httpKeepAlive && r.httpKeepAlive.busiestShare * 100, digits: 1 },
  // reload under a bounded keep-alive load (see reloadUnderLoad)
  { id: '9', label: 'reload under load: failed requests', get: r => r.reloadLoad && r.reloadLoad.failed, reload: true },
  { id: '9b', label: 'reload: requests served during the load', get: r => r.reloadLoad && r.reloadLoad.requests, reload: true },
  { id: '9c', label: 'reload: -> all N new workers listening (ms)', get: r => r.reloadLoad && r.reloadLoad.listeningMs, reload: true },
  { id: '9d', label: 'reload: -> all N old workers gone (ms)', get: r => r.reloadLoad && r.reloadLoad.oldGoneMs, reload: true },
  { id: '9e', label: 'reload: app workers alive after (N wanted)', get: r => r.reloadLoad && r.reloadLoad.appsAfterCount, reload: true },
];

// the scale run (BENCH_SCALE), its own table
const SCALE_FIGURES = [
  { id: 'S1', label: 'time to ready, fork -> bench-ready (ms)', get: r => r.readyMs },
  { id: 'S1b', label: '  of which startCluster -> callback (ms)', get: r => r.startClusterMs },
  { id: 'S2', label: 'master RSS at ready (MiB)', get: r => r.rssKiB / 1024, digits: 1 },
  { id: 'S3', label: 'broadcast agent -> apps: delivered/s', get: r => r.bcast && r.bcast.deliveredPerS },
  { id: 'S3b', label: 'broadcast: master CPU ms / 100k delivered', get: r => r.bcast && r.bcast.masterCpuMsPer100k },
  { id: 'S4', label: 'close: SIGTERM -> master exit (ms)', get: r => r.stop && r.stop.closeMs },
  { id: 'S4b', label: 'close: SIGTERM -> every worker gone (ms)', get: r => r.stop && r.stop.workersGoneMs },
];

function cell(s, digits) {
  if (!s) return '–';
  return `${fmt(s.median, digits)} [${fmt(s.min, digits)}–${fmt(s.max, digits)}]`;
}

function buildTable(allRuns, figures = FIGURES) {
  const rows = [];
  // the scale runs have their own table
  const runs = allRuns.filter(r => !!r.scale === (figures === SCALE_FIGURES));
  if (!runs.length) return { rows, text: '' };
  const pick = (impl, f) => runs.filter(r => r.impl === impl && !!r.sticky === !!f.sticky && !!r.reload === !!f.reload);
  for (const f of figures) {
    // figure 9 only when it ran; with BENCH_RELOAD=only, figure 9 alone
    if (f.reload ? !runs.some(r => r.reload) : runs.every(r => r.reload)) continue;
    const a = summary(pick('egg-cluster', f).map(f.get));
    const b = summary(pick('rs', f).map(f.get));
    const row = { id: f.id, label: f.label, a, b, ratio: null, target: '', status: '' };
    if (f.sticky && !RS_STICKY) {
      row.bText = RS_STICKY_SKIPPED;
      row.ratioText = 'n/a';
      row.target = `≥ ${f.target[1]}×`;
      row.status = 'n/a';
      rows.push(row);
      continue;
    }
    if (a && b && a.median) row.ratio = b.median / a.median;
    if (f.target) {
      const [ op, k ] = f.target;
      row.target = `${op === '>=' ? '≥' : '≤'} ${k}×`;
      if (row.ratio != null) row.status = (op === '>=' ? row.ratio >= k : row.ratio <= k) ? 'met' : 'missed';
    } else if (f.absTarget) {
      const [ op, k, text ] = f.absTarget;
      row.target = text;
      if (b) row.status = (op === '>=' ? b.median >= k : b.median <= k) ? 'met' : 'missed';
    }
    row.digits = f.digits || 0;
    rows.push(row);
  }
  const header = [ '#', 'figure', `${LABEL['egg-cluster']} median [min–max]`, `${LABEL.rs} median [min–max]`, 'rs/egg', 'target', 'status' ];
  const lines = rows.map(r => [
    r.id,
    r.label,
    cell(r.a, r.digits),
    r.bText || cell(r.b, r.digits),
    r.ratioText || (r.ratio == null ? '–' : `${r.ratio.toFixed(2)}×`),
    r.target || '–',
    r.status || '–',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map(l => l[i].length)));
  const line = cols => cols.map((c, i) => (i >= 2 && i <= 4 && c !== RS_STICKY_SKIPPED ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ').trimEnd();
  const sep = widths.map(w => '-'.repeat(w)).join('-|-');
  return { rows, text: [ line(header), sep, ...lines.map(line) ].join('\n') };
}

/** How much of the measured windows the rest of the machine took (other processes, steal). */
function noiseNotes(runs) {
  const lines = [];
  for (const [ impl, scale ] of [ [ 'egg-cluster', false ], [ 'rs', false ], [ 'egg-cluster', true ], [ 'rs', true ] ]) {
    const windows = [];
    for (const r of runs.filter(x => x.impl === impl && !!x.scale === scale)) {
      if (r.startCpu) windows.push(r.startCpu);
      for (const w of Object.values(r.relay || {})) windows.push(w.cpu);
      for (const k of [ 'bcast', 'httpClose', 'httpKeepAlive', 'stickyClose' ]) if (r[k]) windows.push(r[k].cpu);
    }
    if (!windows.length) continue;
    const other = summary(windows.map(w => w.otherPct));
    const steal = summary(windows.map(w => w.stealPct));
    const noisy = windows.filter(w => w.otherPct > 25).length;
    lines.push(`  ${LABEL[impl].padEnd(15)}${scale ? ` (${CFG.scaleWorkers} workers)` : ''} other processes median ${fmt(other.median, 0)}% max ${fmt(other.max, 0)}% of a core` +
      `${steal ? `, steal median ${fmt(steal.median, 1)}%` : ''}; ${noisy} of ${windows.length} windows over 25%`);
  }
  const noisy = lines.some(l => !/ 0 of /.test(l));
  return [
    'CPU used by the rest of the machine during the measured windows (starts, relay, broadcast, HTTP; the scale run: starts, broadcast):',
    ...lines,
    ...(noisy ? [ 'WARNING: the bench shared the machine with other work: figures are noisy, and more so for the side that got more of it (raw windows in the JSON, `cpu.otherPct`)' ] : []),
  ].join('\n');
}

function reloadNotes(runs) {
  const rs = runs.filter(r => r.reloadLoad);
  if (!rs.length) return [];
  return [
    'reload under load (9), each run:',
    ...rs.map(r => {
      const x = r.reloadLoad;
      return `  ${LABEL[r.impl].padEnd(15)} ${x.failed} failed / ${x.requests} requests (${x.errors} socket errors/timeouts, ${x.non2xx} non-2xx), ` +
        `listening ${fmt(x.listeningMs)} ms, old gone ${fmt(x.oldGoneMs)} ms, app workers ${x.oldApps.length} -> ${x.appsAfterCount}` +
        `${x.replacedAll ? '' : ' (NOT all replaced)'}${x.outlasted ? ' (reload outlasted the load)' : ''}` +
        `${x.rsDoneLine ? `; master: "${x.rsDoneLine}", reload-done message at ${fmt(x.rsReloadDoneMsgMs)} ms` : ''}`;
    }),
  ];
}

function spreadNotes(runs) {
  const out = [];
  for (const [ key, name ] of [ [ 'httpClose', 'Connection: close' ], [ 'httpKeepAlive', 'keep-alive' ], [ 'stickyClose', 'sticky' ] ]) {
    for (const impl of [ 'egg-cluster', 'rs' ]) {
      const rs = runs.filter(r => r.impl === impl && r[key]);
      if (!rs.length) continue;
      out.push(`  ${name.padEnd(17)} ${LABEL[impl].padEnd(15)} ${rs.map(r => r[key].shares.map(s => (s * 100).toFixed(1)).join('/')).join(',  ')}`);
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

function gitRev() {
  try {
    return execFileSync('git', [ 'rev-parse', '--short', 'HEAD' ], { cwd: ROOT, encoding: 'utf8' }).trim() +
      (execFileSync('git', [ 'status', '--porcelain', '--', 'src', 'index.js', 'lib' ], { cwd: ROOT, encoding: 'utf8' }).trim() ? '+dirty' : '');
  } catch (_) {
    return 'unknown';
  }
}

async function main() {
  if (process.platform !== 'linux') throw new Error('the bench reads /proc: Linux only');
  try {
    require.resolve(path.join(ROOT, 'native.js'));
  } catch (_) {
    throw new Error('the addon is not built: run `npm run build` first');
  }
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-bench-'));
  const gen = loadgen.detect();
  const started = new Date();
  const eggClusterVersion = require(path.join(ROOT, 'node_modules', A_PACKAGE, 'package.json')).version;
  const eggVersion = require(path.join(FRAMEWORK, 'package.json')).version;
  log(`${A_PACKAGE} ${eggClusterVersion} (A) vs egg-cluster-rs ${require(path.join(ROOT, 'package.json')).version} (B), egg ${eggVersion}, node ${process.version}, ${os.cpus().length} CPUs`);
  log(`load generator: ${gen.name} ${gen.version}${gen.name === 'autocannon' ? ' (wrk not found on PATH: `apt-get install wrk` for a lighter one)' : ''}`);
  if (!CFG.scaleOnly) log(`${CFG.starts} start(s) each, figures 3-8 on the first ${CFG.workloadRounds}${QUICK ? ' (BENCH_QUICK)' : ''}; logs in ${tmpDir}`);

  const runs = [];
  const meta = {
    started: started.toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0] && os.cpus()[0].model,
    kernel: os.release(),
    clkTck: proc.clkTck,
    loadgen: { name: gen.name, version: gen.version },
    eggCluster: eggClusterVersion,
    eggClusterPackage: A_PACKAGE,
    egg: eggVersion,
    eggClusterRs: gitRev(),
    config: CFG,
    timeToReady: 'driver: from fork() of bench/run-master.js to its bench-ready message; startClusterMs: inside the master, startCluster() -> callback',
  };
  for (let round = 1; round <= (CFG.scaleOnly ? 0 : CFG.starts); round++) {
    const withWorkloads = round <= CFG.workloadRounds;
    if (!CFG.reloadOnly) {
      for (const impl of [ IMPLS.A, IMPLS.B ]) {
        runs.push(await runInstance(impl, round, withWorkloads, gen));
      }
      if (withWorkloads && CFG.sticky) {
        runs.push(await runSticky('egg-cluster', round, gen));
        if (RS_STICKY) runs.push(await runSticky('rs', round, gen));
      }
    }
    if (withWorkloads && CFG.reload) {
      for (const impl of [ IMPLS.A, IMPLS.B ]) runs.push(await runReload(impl, round, gen));
    }
  }
  if (CFG.scale) {
    log(`${CFG.scaleWorkers}-worker run: ${CFG.scaleStarts} start(s) each, with a broadcast and a timed close`);
    for (let round = 1; round <= CFG.scaleStarts; round++) {
      for (const impl of [ IMPLS.A, IMPLS.B ]) runs.push(await runScale(impl, round));
    }
  }

  // the floor of figure 2: RSS of a bare `node` child with an IPC channel, as each master is
  const baseline = [];
  for (let i = 0; i < (CFG.reloadOnly || CFG.scaleOnly ? 0 : QUICK ? 1 : 3); i++) {
    const inst = new Instance('baseline');
    await inst.start();
    await sleep(200);
    baseline.push(proc.rssKiB(inst.masterPid) / 1024);
    await inst.stop();
  }
  meta.nodeBaselineRssMiB = baseline;

  const table = report(meta, runs);
  fs.mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, `${started.toISOString().replace(/[:.]/g, '-')}.json`);
  meta.finished = new Date().toISOString();
  fs.writeFileSync(file, JSON.stringify({ meta, summary: table.rows, scaleSummary: table.scaleRows, runs }, null, 2));
  process.stdout.write(`raw runs: ${path.relative(process.cwd(), file)}\n`);
  if (process.env.BENCH_KEEP_LOGS) process.stdout.write(`master logs: ${tmpDir}\n`);
  else fs.rmSync(tmpDir, { recursive: true, force: true });
}

/** Prints the table and the notes; returns the table rows (for the JSON). */
function report(meta, runs) {
  const { config: cfg, loadgen: gen } = meta;
  const table = buildTable(runs);
  const scale = buildTable(runs, SCALE_FIGURES);
  const leftovers = runs.flatMap(r => (r.stop && r.stop.leftovers) || []);
  const out = [
    '',
    `${meta.eggClusterPackage || 'egg-cluster'} ${meta.eggCluster} vs egg-cluster-rs (${meta.eggClusterRs}), egg ${meta.egg}, node ${meta.node}, ${meta.cpus} CPUs, ${cfg.workers} app workers`,
    `load generator: ${gen.name} ${gen.version}, ${cfg.httpConnections} connections, ${cfg.httpS} s runs after a ${cfg.httpWarmS} s warmup` +
      `${gen.name === 'wrk' ? ' (1 thread)' : ''}; ${cfg.starts} starts each, ${cfg.workloadRounds} workload runs each, alternating A B`,
    `relay: window ${cfg.relayWindow} round trips per app worker (all workers at once), ${cfg.relayMs} ms; a round trip is 2 relayed msgs`,
    ...(cfg.reload ? [ `reload (9): keep-alive, ${cfg.reloadConnections} connections${gen.name === 'autocannon' ? `, at most ${cfg.reloadRate} req/s` : ''}, ${cfg.reloadLoadS} s; ` +
      `reload triggered ${cfg.reloadAfterS} s in (rs: SIGUSR2, egg-cluster: reload-worker); times from the trigger, driver clock` ] : []),
    '',
    ...(table.text ? [ table.text, '', 'per-worker share of requests, each run (%):', spreadNotes(runs), '' ] : []),
    ...(scale.text ? [ `${runs.find(r => r.scale).workers} app workers (the scale run: start, broadcast, close; ${cfg.scaleStarts} starts each, alternating A B):`, scale.text, '' ] : []),
    ...(meta.nodeBaselineRssMiB.length ? [ `for figure 2: a bare node process with an IPC channel (the floor of any master that is a Node process) has ${fmt(summary(meta.nodeBaselineRssMiB).median, 1)} MiB RSS` ] : []),
    ...reloadNotes(runs),
    noiseNotes(runs),
    `processes left behind: ${leftovers.length ? leftovers.join(', ') : 'none'}`,
  ].join('\n');
  process.stdout.write(`${out}\n`);
  return { rows: table.rows, scaleRows: scale.rows };
}

function killAll() {
  for (const inst of live) inst.killNow();
}

process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});
process.on('SIGTERM', () => {
  killAll();
  process.exit(143);
});

// the pieces other bench scripts reuse (bench/heartbeat.js)
exports.CFG = CFG;
exports.Instance = Instance;
exports.relay = relay;
exports.latency = latency;
exports.http = http;
exports.waitQuiet = waitQuiet;
exports.useTmpDir = dir => { tmpDir = dir; };
exports.killAll = killAll;
exports.fmt = fmt;
exports.cell = cell;

if (require.main !== module) {
  // required by another bench script
} else if (process.argv[2] === '--report') {
  // re-print the table of a results file: node bench/index.js --report bench/results/<file>.json
  const { meta, runs } = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  report(meta, runs);
} else {
  main().catch(onError);
}

function onError(err) {
  killAll();
  console.error(`[bench] failed: ${err && err.stack || err}`);
  if (tmpDir) console.error(`[bench] master logs kept in ${tmpDir}`);
  process.exitCode = 1;
}
