'use strict';

require('./lib/node')(); // BENCH_NODE=<major>: the whole run on that Node

/**
 * `npm run soak` (node bench/soak.js): one cluster of the bench app (egg 3, started as
 * production starts it: `egg-scripts start --daemon --framework=<this package>`) under a
 * bounded mixed load — keep-alive clients and `Connection: close` clients, each paced — while a
 * schedule of events runs, one at a time: master upgrades first (so that one master runs all the
 * rest), then rolling reloads, scale up/down, app-worker SIGKILLs, agent SIGKILLs and app workers
 * hung past `workerTimeout`, shuffled. Each event's end is waited for through the master's
 * control socket (`status`, the CLI's client), never slept on; then every client must have been
 * answered once more before the next event, so a request the event broke is counted with it.
 *
 * Every second: the master's fds, RSS and threads, the processes in its tree, and the load's
 * answered and failed requests. At the end: a table per event kind (count, failed requests
 * during it, time to recover), bench/results/soak-<time>.svg (the chart) and .json (every
 * sample and event), and as the last line one JSON object with the figures the acceptance is
 * judged on. Exit code 1 when a figure misses it (see `judge`).
 *
 * Counts (flag or variable; SOAK_QUICK=1 changes the defaults to a run of a few minutes):
 *   --reloads=N (SOAK_RELOADS)  --upgrades=N (SOAK_UPGRADES)  --kills=N (SOAK_KILLS)
 *   --agent-kills=N (SOAK_AGENT_KILLS)  --hangs=N (SOAK_HANGS)  --scales=N (SOAK_SCALES)
 * Others: --duration=S (SOAK_DURATION): no new event after S seconds (0: no limit);
 *   --workers=N (2)  --sticky (SOAK_STICKY=1)  --keep-alive=N (4) --close=N (4) clients
 *   --pace=MS (20): least time between one client's requests; --worker-timeout=MS (15000);
 *   --seed=N: the shuffle.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const { Load } = require('../__test__/load');
const { get } = require('../__test__/helper');
const { freePort } = require('./lib/port');
const { run } = require('./lib/run');
const proc = require('./lib/proc');
const report = require('./lib/soak-report');
const cli = require('../bin/egg-cluster-rs');

const ROOT = path.join(__dirname, '..');
const APP = path.join(__dirname, 'fixtures', 'app');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');
const RESULTS = path.join(__dirname, 'results');

const QUICK = { reloads: 4, upgrades: 2, kills: 4, 'agent-kills': 2, hangs: 2, scales: 4 };
const DEFAULTS = { reloads: 40, upgrades: 5, kills: 40, 'agent-kills': 10, hangs: 10, scales: 10 };
const NUMBERS = { duration: 0, workers: 2, 'keep-alive': 4, close: 4, pace: 20, 'worker-timeout': 15000, seed: 1 };

function log(...args) {
  console.log(`[soak ${new Date().toISOString().slice(11, 19)}]`, ...args);
}

/**
 * @param {string[]} argv -
 * @param {Object} env -
 * @return {Object} the run's settings; a bad value throws naming the flag or the variable
 */
function settings(argv, env) {
  const flags = {};
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg} (see the head of bench/soak.js)`);
    flags[m[1]] = m[2] === undefined ? true : m[2];
  }
  const quick = env.SOAK_QUICK === '1';
  const known = { ...(quick ? QUICK : DEFAULTS), ...NUMBERS };
  const out = { quick, sticky: flags.sticky === true || env.SOAK_STICKY === '1' };
  delete flags.sticky;
  for (const name of Object.keys(flags)) {
    if (!(name in known)) throw new Error(`unknown flag --${name} (see the head of bench/soak.js)`);
  }
  for (const [ name, def ] of Object.entries(known)) {
    const variable = `SOAK_${name.toUpperCase().replace(/-/g, '_')}`;
    const [ raw, from ] = name in flags ? [ flags[name], `--${name}` ] : [ env[variable], variable ];
    if (raw === undefined || raw === '') {
      out[name] = def;
      continue;
    }
    if (!/^\d+$/.test(String(raw))) throw new Error(`${from} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    out[name] = Number(raw);
  }
  if (out.workers < 1) throw new Error('--workers (SOAK_WORKERS) must be at least 1');
  if (out['worker-timeout'] < 1000) throw new Error('--worker-timeout (SOAK_WORKER_TIMEOUT) must be at least 1000 ms');
  if (out['keep-alive'] + out.close < 1) throw new Error('the load needs at least one client (--keep-alive, --close)');
  return out;
}

/** A seeded shuffle (mulberry32), so that a run's schedule can be replayed. */
function shuffle(list, seed) {
  let a = seed >>> 0;
  const rnd = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [ list[i], list[j] ] = [ list[j], list[i] ];
  }
  return list;
}

/**
 * Upgrades first, then the rest shuffled; a scale up is followed by a scale down (so that the
 * settled samples the drift is read on mostly have the starting worker count).
 */
function schedule(s) {
  const mixed = [];
  const add = (kind, n) => {
    for (let i = 0; i < n; i++) mixed.push(kind);
  };
  add('reload', s.reloads);
  add('kill', s.kills);
  add('agent-kill', s['agent-kills']);
  add('hang', s.hangs);
  add('scale', Math.ceil(s.scales / 2));
  shuffle(mixed, s.seed);
  let scales = s.scales;
  const rest = mixed.flatMap(kind => {
    if (kind !== 'scale') return [ kind ];
    scales -= 2;
    return scales >= 0 ? [ 'scale-up', 'scale-down' ] : [ 'scale-up' ];
  });
  return [ ...Array(s.upgrades).fill('upgrade'), ...rest ];
}

const delay = ms => new Promise(resolve => setTimeout(resolve, ms));

class Soak {
  constructor(s) {
    this.s = s;
    this.t0 = Date.now();
    this.samples = [];
    this.events = [];
    this.settled = [];
    this.current = null; // the event under way: its failures are counted with it
    this.outside = 0; // failed requests while no event ran
    this.second = { ok: 0, failed: 0 };
    this.boundPid = []; // keep-alive client -> the worker its connection reached (last answer)
    this.answeredAt = []; // client -> when its last request completed (any outcome)
    this.seen = new Map(); // pid -> starttime of every process seen in a master's tree
    this.masters = [];
  }

  tail(n = 40) {
    try {
      return fs.readFileSync(this.stdout, 'utf8').split('\n').slice(-n).join('\n');
    } catch (_) {
      return '';
    }
  }

  async start() {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-soak-'));
    this.port = await freePort();
    this.title = `egg-cluster-rs-soak-${process.pid}-${Date.now()}`;
    this.stdout = path.join(this.tmp, 'master.out');
    this.env = {
      ...process.env,
      BENCH_TMP: this.tmp,
      HOME: this.tmp,
      EGG_SERVER_ENV: 'prod',
      EGG_CLUSTER_RS_WORKER_TIMEOUT: String(this.s['worker-timeout']),
      // a replacement's boot on a busy shared machine (a niced run) may well take over the
      // default minute; a reload that gives up on it is not what is measured here
      EGG_CLUSTER_RS_RELOAD_TIMEOUT: process.env.EGG_CLUSTER_RS_RELOAD_TIMEOUT || '300000',
    };
    const args = [ 'start', '--daemon', `--title=${this.title}`, `--port=${this.port}`, `--workers=${this.s.workers}`,
      `--framework=${ROOT}`, `--stdout=${this.stdout}`, `--stderr=${path.join(this.tmp, 'master.err')}` ];
    if (this.s.sticky) args.push('--sticky');
    args.push(APP);
    await run(EGG_SCRIPTS, args, this.env);
    const found = cli.findMasters(this.title);
    if (found.length !== 1) throw new Error(`expected one master titled ${this.title}, found ${JSON.stringify(found)}`);
    this.master = found[0].pid;
    this.masters.push(this.master);
    this.workers = this.s.workers;
    await this.until(st => this.steady(st), 120000, 'the cluster serving');
    this.sampler = setInterval(() => this.sample(), 1000);
    this.load = new Load(this.port, {
      keepAlive: this.s['keep-alive'],
      close: this.s.close,
      keep: false,
      pace: this.s.pace,
      // longer than a hung worker lasts (its requests fail when it is killed, not by our timer)
      timeout: this.s['worker-timeout'] + 120000,
      onResult: r => this.onResult(r),
    });
    // warm-up: every client answered a few times
    await this.answeredAll(Date.now(), 60000, 5);
  }

  onResult(r) {
    this.answeredAt[r.client] = r.t;
    if (r.error) {
      this.second.failed++;
      if (r.kind === 'keep-alive') this.boundPid[r.client] = null;
      const e = this.current;
      if (e) {
        e.failed++;
        e.failedBy[r.client] = (e.failedBy[r.client] || 0) + 1;
        if (e.errors.length < 5) e.errors.push(r.error);
      } else {
        this.outside++;
        if (this.outside <= 5) log(`a request failed outside any event: ${r.error}`);
      }
      return;
    }
    this.second.ok++;
    if (r.kind === 'keep-alive') this.boundPid[r.client] = r.pid;
    if (this.current) this.current.requests++;
  }

  sample() {
    const pid = this.master;
    const tree = proc.descendants(pid);
    for (const p of [ pid, ...tree ]) {
      if (!this.seen.has(p)) {
        const st = proc.stat(p);
        if (st) this.seen.set(p, st.starttime);
      }
    }
    this.samples.push({
      t: (Date.now() - this.t0) / 1000,
      masterPid: pid,
      rssKiB: proc.rssKiB(pid),
      ...proc.memKiB(pid),
      fds: proc.fdCount(pid),
      threads: proc.threadCount(pid),
      tree: tree.length,
      ok: this.second.ok,
      failed: this.second.failed,
    });
    this.second = { ok: 0, failed: 0 };
  }

  async status() {
    return cli.askStatus(this.master, 10000);
  }

  /** Polls the master's status until `pred` holds; throws with the last status and the log's tail. */
  async until(pred, timeout, what) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
      try {
        last = await this.status();
        const v = pred(last);
        if (v) return v;
      } catch (err) {
        last = { error: err.message };
      }
      if (Date.now() > deadline) {
        throw new Error(`timeout (${timeout} ms) waiting for ${what}; last status: ${JSON.stringify(last)}\n--- master log ---\n${this.tail()}`);
      }
      await delay(100);
    }
  }

  /** Everything as asked: ready, the wanted app workers all serving, the agent serving, healthy. */
  steady(st, gone = []) {
    const m = st.master;
    const apps = st.children.filter(c => c.role === 'app');
    const agent = st.children.find(c => c.role === 'agent');
    return m.phase === 'ready' && m.healthy && m.workers === this.workers && apps.length === this.workers &&
      apps.every(c => c.state === 'serving') && agent && agent.state === 'serving' &&
      !st.children.some(c => gone.includes(c.pid)) && st;
  }

  async dead(pids, timeout, what) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const alive = pids.filter(proc.alive);
      if (!alive.length) return;
      if (Date.now() > deadline) throw new Error(`timeout (${timeout} ms) waiting for ${what} (${alive.join(', ')}) to be gone`);
      await delay(50);
    }
  }

  /** Every client completed `times` requests started after `since`. */
  async answeredAll(since, timeout, times = 1) {
    const n = this.s['keep-alive'] + this.s.close;
    const counts = new Array(n).fill(0);
    const marks = new Array(n).fill(since);
    const deadline = Date.now() + timeout;
    for (;;) {
      for (let c = 0; c < n; c++) {
        const at = this.answeredAt[c] || 0;
        if (at > marks[c]) {
          counts[c]++;
          marks[c] = at;
        }
      }
      if (counts.every(x => x >= times)) return;
      if (Date.now() > deadline) throw new Error(`timeout (${timeout} ms) waiting for every client to be answered again (${JSON.stringify(counts)})`);
      await delay(this.s.pace || 10);
    }
  }

  /**
   * Clients that could have had a request at app worker `pid` when it was killed or hung: a
   * keep-alive client whose connection reached it (or whose connection is new, not answered
   * yet); a `Connection: close` client with a request under way — in sticky mode any close
   * client, as its next connection is handed to the slot of its address until it serves again.
   */
  exposed(pid, liveApps) {
    let n = 0;
    const ka = this.s['keep-alive'];
    for (let c = 0; c < ka; c++) {
      const b = this.boundPid[c];
      if (b === pid || b == null || !liveApps.includes(b)) n++;
    }
    for (let c = ka; c < ka + this.s.close; c++) {
      if (this.s.sticky || this.load.inflight[c]) n++;
    }
    return n;
  }

  async event(kind) {
    const e = { kind, i: this.events.length, t: (Date.now() - this.t0) / 1000, failed: 0, requests: 0, failedBy: {}, errors: [] };
    const before = await this.until(st => this.steady(st), 120000, `the cluster steady before ${kind}`);
    const apps = before.children.filter(c => c.role === 'app').map(c => c.pid);
    const agent = before.children.find(c => c.role === 'agent').pid;
    const started = Date.now();
    this.current = e;
    try {
      await this.perform(e, apps, agent);
    } catch (err) {
      // An event that did not end as it should is a finding, not the end of the run: it is
      // recorded, and the run goes on once the cluster is whole again (whoever serves).
      e.error = err.message.split('\n')[0];
      log(`#${e.i} ${kind}${e.pid ? ` ${e.pid}` : ''} did not complete: ${err.message}`);
      await this.until(st => this.steady(st), 180000, `the cluster whole again after the failed ${kind}`);
    }
    e.recoverMs = Date.now() - started;
    // the requests the event broke end with it: every client answered once more since
    await this.answeredAll(Date.now(), 120000);
    this.current = null;
    const s = { masterPid: this.master, workers: this.workers, fds: proc.fdCount(this.master), rssKiB: proc.rssKiB(this.master), ...proc.memKiB(this.master), threads: proc.threadCount(this.master) };
    this.settled.push(s);
    delete e.failedBy[undefined];
    this.events.push(e);
    return e;
  }

  /** Does event `e` to the cluster whose app workers are `apps`, and waits for its end. */
  async perform(e, apps, agent) {
    const victim = () => apps[Math.floor(Math.random() * apps.length)];
    switch (e.kind) {
      case 'reload': {
        process.kill(this.master, 'SIGUSR2');
        await this.until(st => this.steady(st, apps), 180000, 'the reload done');
        await this.dead(apps, 60000, 'the old app workers');
        break;
      }
      case 'upgrade': {
        const old = this.master;
        const answer = await cli.ask(old, 'upgrade', 400000);
        if (!answer.ok) throw new Error(`upgrade of master ${old} failed: ${answer.error}\n${this.tail()}`);
        this.master = answer.pid;
        this.masters.push(answer.pid);
        e.pid = answer.pid;
        await this.dead([ old, agent, ...apps ], 120000, 'the old master and its children');
        await this.until(st => this.steady(st), 120000, 'the new master serving');
        break;
      }
      case 'scale-up': {
        process.kill(this.master, 'SIGTTIN');
        this.workers++;
        await this.until(st => this.steady(st), 180000, `${this.workers} app workers serving`);
        break;
      }
      case 'scale-down': {
        process.kill(this.master, 'SIGTTOU');
        this.workers--;
        const st = await this.until(s => this.steady(s), 180000, `${this.workers} app workers serving`);
        const left = st.children.filter(c => c.role === 'app').map(c => c.pid);
        e.pid = apps.find(p => !left.includes(p));
        await this.dead([ e.pid ], 60000, 'the retired app worker');
        break;
      }
      case 'kill': {
        e.pid = victim();
        e.exposed = this.exposed(e.pid, apps);
        process.kill(e.pid, 'SIGKILL');
        await this.until(st => this.steady(st, [ e.pid ]), 180000, `app worker ${e.pid} replaced`);
        break;
      }
      case 'agent-kill': {
        e.pid = agent;
        process.kill(agent, 'SIGKILL');
        await this.until(st => this.steady(st, [ agent ]), 180000, `agent ${agent} replaced`);
        break;
      }
      case 'hang': {
        const r = await get(this.port, '/soak/hang', { timeout: 30000 });
        if (r.status !== 200) throw new Error(`GET /soak/hang: ${r.status} ${r.body}`);
        e.pid = Number(r.body);
        e.exposed = this.exposed(e.pid, apps);
        await this.until(st => this.steady(st, [ e.pid ]), this.s['worker-timeout'] + 180000, `hung app worker ${e.pid} replaced`);
        await this.dead([ e.pid ], 60000, 'the hung app worker');
        break;
      }
      default:
        throw new Error(`unknown event ${e.kind}`);
    }
  }

  /** SIGTERM to the master; then what is left of every process ever seen in its trees. */
  async stop() {
    clearInterval(this.sampler);
    if (this.load) await this.load.stop();
    const pid = this.master;
    this.finalStatus = await this.status().catch(() => null);
    try {
      process.kill(pid, 'SIGTERM');
    } catch (_) {
      // gone
    }
    await this.dead([ pid ], 60000, 'the master');
    const deadline = Date.now() + 5000;
    let left;
    for (;;) {
      left = [ ...this.seen ].filter(([ p, start ]) => {
        const st = proc.stat(p);
        return st && st.starttime === start && proc.alive(p);
      }).map(([ p ]) => p);
      // and whatever names the run's title (the master and workers' arguments carry it)
      for (const name of fs.readdirSync('/proc')) {
        const p = Number(name);
        if (p && p !== process.pid && !left.includes(p) && proc.cmdline(p).join(' ').includes(this.title) && proc.alive(p)) left.push(p);
      }
      if (!left.length || Date.now() > deadline) break;
      await delay(100);
    }
    // the hung workers' diagnostic reports (the app's run/ dir): ours, not worth keeping
    for (const p of this.seen.keys()) fs.rmSync(path.join(APP, 'run', `hung.${p}.report.json`), { force: true });
    for (const p of left) {
      log(`left after stop: ${p} ${proc.cmdline(p).join(' ').slice(0, 160)}`);
      try {
        process.kill(p, 'SIGKILL');
      } catch (_) {
        // gone
      }
    }
    return left.length;
  }
}

/**
 * The acceptance: no failed request on reloads, upgrades and scaling; on a kill or a hang, no
 * client failed more than once and no more clients failed than could have been at that worker;
 * fd and RSS drift within 5 %; nothing left after stop; every event completed; nothing replaced
 * that we did not kill.
 */
function judge(result, events, d, unexpected) {
  const misses = [];
  if (result.failed_on_reloads) misses.push(`${result.failed_on_reloads} failed requests on reloads`);
  if (result.failed_on_upgrades) misses.push(`${result.failed_on_upgrades} failed requests on upgrades`);
  if (result.failed_on_scale) misses.push(`${result.failed_on_scale} failed requests on scaling`);
  for (const e of events.filter(x => x.kind === 'agent-kill' && x.failed)) {
    misses.push(`agent kill #${e.i}: ${e.failed} failed requests (${e.errors.join(', ')})`);
  }
  for (const e of events.filter(x => x.kind === 'kill' || x.kind === 'hang')) {
    const twice = Object.values(e.failedBy).some(n => n > 1);
    if (e.failed > e.exposed || twice) {
      misses.push(`${e.kind} #${e.i} of ${e.pid}: ${e.failed} failed requests, ${e.exposed} could have been there${twice ? ', a client failed twice' : ''} (${e.errors.join(', ')})`);
    }
  }
  if (!d) misses.push('too few settled samples for the drift');
  else {
    if (Math.abs(d.fdPct) > 5) misses.push(`fd drift ${d.fdPct} %`);
    if (Math.abs(d.rssPct) > 5) misses.push(`RSS drift ${d.rssPct} %`);
  }
  if (result.left) misses.push(`${result.left} processes left after stop`);
  for (const e of events.filter(x => x.error)) misses.push(`${e.kind} #${e.i} did not complete: ${e.error}`);
  misses.push(...unexpected);
  return misses;
}

async function main() {
  let s;
  try {
    s = settings(process.argv.slice(2), process.env);
  } catch (err) {
    console.error(`soak: ${err.message}`);
    process.exitCode = 2;
    return;
  }
  try {
    require.resolve(path.join(ROOT, 'native.js'));
  } catch (_) {
    throw new Error('the addon is not built: run `npm run build` first');
  }
  const plan = schedule(s);
  log(`node ${process.version}, ${os.cpus().length} CPUs, ${s.workers} app workers${s.sticky ? ', sticky' : ''}, ` +
    `${s['keep-alive']} keep-alive + ${s.close} close clients every ${s.pace} ms, workerTimeout ${s['worker-timeout']} ms; ` +
    `${plan.length} events: ${s.upgrades} upgrades, then ${s.reloads} reloads, ${s.kills} kills, ${s['agent-kills']} agent kills, ` +
    `${s.hangs} hangs, ${s.scales} scales shuffled (seed ${s.seed})${s.duration ? `, at most ${s.duration} s` : ''}`);
  const soak = new Soak(s);
  let error = null;
  let left = null;
  try {
    await soak.start();
    log(`master ${soak.master} serves on ${soak.port}; logs in ${soak.tmp}`);
    const every = Math.max(1, Math.round(plan.length / 20));
    for (const kind of plan) {
      if (s.duration && Date.now() - soak.t0 > s.duration * 1000) {
        log(`--duration ${s.duration} s reached after ${soak.events.length} events`);
        break;
      }
      const e = await soak.event(kind);
      if (e.failed || soak.events.length % every === 0 || kind === 'upgrade') {
        log(`#${e.i} ${kind}${e.pid ? ` ${e.pid}` : ''}: recovered in ${e.recoverMs} ms, ${e.failed} failed of ${e.requests + e.failed}` +
          `${e.exposed != null ? ` (${e.exposed} exposed)` : ''}${e.errors.length ? ` ${JSON.stringify(e.errors)}` : ''}`);
      }
    }
  } catch (err) {
    error = err;
    soak.current = null;
    console.error(`soak: ${err.stack || err}`);
  } finally {
    left = await soak.stop().catch(err => {
      console.error(`soak: stop: ${err.message}`);
      return -1;
    });
  }

  const last = soak.masters[soak.masters.length - 1];
  const events = soak.events;
  const sum = (kinds, f) => events.filter(e => kinds.includes(e.kind)).reduce((a, e) => a + f(e), 0);
  const count = kinds => events.filter(e => kinds.includes(e.kind)).length;
  const d = report.drift(soak.settled, s.workers);
  const result = {
    reloads: count([ 'reload' ]),
    upgrades: count([ 'upgrade' ]),
    kills: count([ 'kill' ]),
    agent_kills: count([ 'agent-kill' ]),
    hangs: count([ 'hang' ]),
    scales: count([ 'scale-up', 'scale-down' ]),
    failed_on_reloads: sum([ 'reload' ], e => e.failed),
    failed_on_upgrades: sum([ 'upgrade' ], e => e.failed),
    failed_on_scale: sum([ 'scale-up', 'scale-down' ], e => e.failed),
    failed_on_kills: sum([ 'kill', 'agent-kill', 'hang' ], e => e.failed),
    fd_drift_pct: d ? d.fdPct : null,
    rss_drift_pct: d ? d.rssPct : null,
    // of RssAnon alone (a leak's part of RSS; the rest is mapped files' pages)
    rss_anon_drift_pct: d ? d.anonPct : null,
    left,
  };
  const unexpected = [];
  if (soak.outside) unexpected.push(`${soak.outside} failed requests outside any event`);
  // what the last master replaced, against what was done to it: nothing else may have died or hung
  const since = events.filter(e => e.kind === 'upgrade').length;
  const mine = events.slice(since);
  const st = soak.finalStatus && soak.finalStatus.master;
  if (st) {
    const reforks = mine.filter(e => e.kind === 'kill' || e.kind === 'agent-kill').length;
    const hangs = mine.filter(e => e.kind === 'hang').length;
    if (st.reforks !== reforks) unexpected.push(`the master reforked ${st.reforks} children for ${reforks} kills`);
    if (st.hung !== hangs) unexpected.push(`the master found ${st.hung} children hung for ${hangs} hangs`);
  } else if (!error) {
    unexpected.push('no status from the master before the stop');
  }
  const misses = error ? [ `the run stopped: ${error.message.split('\n')[0]}` ] : [];
  misses.push(...judge(result, events, d, unexpected));

  fs.mkdirSync(RESULTS, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const base = path.join(RESULTS, `soak-${stamp}`);
  const title = `egg-cluster-rs soak: ${events.length} events in ${((Date.now() - soak.t0) / 60000).toFixed(1)} min, ` +
    `node ${process.version}, ${os.cpus().length} CPUs${s.sticky ? ', sticky' : ''}`;
  fs.writeFileSync(`${base}.svg`, report.svg(soak.samples, events, title));
  fs.writeFileSync(`${base}.json`, JSON.stringify({ settings: s, result, drift: d, misses, masters: soak.masters, events, settled: soak.settled, samples: soak.samples }));
  console.log(`\n${report.table(events)}\n`);
  const mib = kib => (kib / 1024).toFixed(1);
  if (d) {
    console.log(`master (pid ${last}) after warm-up → end, medians of ${d.k} settled samples each: ` +
      `fds ${d.base.fds} → ${d.end.fds} (${d.fdPct} %), RSS ${mib(d.base.rssKiB)} → ${mib(d.end.rssKiB)} MiB (${d.rssPct} %; ` +
      `anonymous ${mib(d.base.anonKiB)} → ${mib(d.end.anonKiB)} MiB (${d.anonPct} %), mapped files ${mib(d.base.fileKiB)} → ${mib(d.end.fileKiB)} MiB)`);
  }
  console.log(`chart: ${path.relative(process.cwd(), `${base}.svg`)}, samples and events: ${path.relative(process.cwd(), `${base}.json`)}`);
  if (misses.length) {
    console.log(`MISSED: ${misses.join('; ')}`);
    process.exitCode = 1;
  } else {
    console.log('every figure within the acceptance');
  }
  console.log(JSON.stringify(result));
}

if (require.main === module) {
  main().catch(err => {
    console.error(err);
    process.exitCode = 1;
  });
}

module.exports = { settings, schedule };
