#!/usr/bin/env node
'use strict';

/**
 * egg-cluster-rs reload [--title=T] [--pid=N] [--no-wait]  rolling reload of the app workers
 * egg-cluster-rs scale up|down [--title=T] [--pid=N] [--no-wait]  add / retire one app worker
 * egg-cluster-rs status [--title=T] [--pid=N] [--json]   the cluster's status
 * egg-cluster-rs upgrade [--title=T] [--pid=N]      master upgrade: a new master takes the sockets
 *                                          over (docs/upgrade.md)
 * egg-cluster-rs top [--title=T] [--pid=N] [--once] a live view of the cluster (lib/top.js)
 *
 * Each asks the master over its control socket (same user only, see docs/operations.md) and
 * waits for the outcome; `--no-wait` sends the signal (SIGUSR2, SIGTTIN / SIGTTOU) instead.
 * Finds the master like `egg-scripts stop` does: `ps -wweo "pid,args"`, node
 * processes whose args include `start-cluster` (and `"title":"T"` with --title),
 * restricted to the current user's processes; reload, scale and upgrade skip the masters that
 * are starting or closing (an upgrade's new master booting, the old one draining). With several
 * left and neither --title nor --pid, they list them and do nothing.
 */

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const USAGE = `Usage:
  egg-cluster-rs reload [--title=T] [--pid=N] [--no-wait]
                                           rolling reload: replace the app workers, a surge at a
                                           time; waits: a line per worker replaced, exit 0 once
                                           every new worker serves, 1 with the reason when the
                                           reload failed
  egg-cluster-rs scale up|down [--title=T] [--pid=N] [--no-wait]
                                           add / retire one app worker; waits until it serves
                                           (up) or has drained and exited (down)
  egg-cluster-rs status [--title=T] [--pid=N] [--json]
                                           the master's status: its phase and each worker's
                                           state, restarts, last exit, RSS, CPU and counters
  egg-cluster-rs upgrade [--title=T] [--pid=N]
                                           replace the whole tree (master, agent, workers) with
                                           the code on disk, keeping the sockets; waits for the
                                           outcome: exit 0 once the new master serves, 1 with
                                           the reason when it was refused or rolled back
  egg-cluster-rs top [--title=T] [--pid=N] [--once]
                                           a live view of one master's cluster, refreshed each
                                           second: per worker CPU, memory, event loop, req/s,
                                           latency; q quits. --once prints one frame

Options:
  --title=T    only the master started with egg-scripts start --title=T
  --pid=N      the master with this pid (any egg-cluster-rs master of yours, not only egg-scripts')
  --json       status: print the snapshot as JSON
  --once       top: print one frame (rates over one second) and exit
  --no-wait    reload, scale: send the signal (SIGUSR2, SIGTTIN, SIGTTOU) and exit at once
  -h, --help   show this help

The master is found as \`egg-scripts stop\` finds it: a node process of the
current user whose arguments contain "start-cluster" (and "title":"T").
reload, scale and upgrade skip masters that are starting or closing (during an
upgrade: the new master booting, the old one draining), and join an upgrade
that runs. They refuse to guess: when several masters are left and neither
--title nor --pid was given, they list them and ask none.`;

function parseArgs(argv) {
  const out = { _: [], title: undefined, help: false, json: false, once: false, pid: undefined, wait: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') out.help = true;
    else if (arg === '--json') out.json = true;
    else if (arg === '--once') out.once = true;
    else if (arg === '--no-wait') out.wait = false;
    else if (arg.startsWith('--pid=')) {
      out.pid = Number(arg.slice('--pid='.length));
      if (!Number.isInteger(out.pid) || out.pid <= 0) throw new Error('--pid needs a positive integer');
    }
    else if (arg.startsWith('--title=')) out.title = arg.slice('--title='.length);
    else if (arg === '--title') {
      if (i + 1 >= argv.length) throw new Error('--title needs a value');
      out.title = argv[++i];
    } else if (arg.startsWith('-')) throw new Error(`unknown option: ${arg}`);
    else out._.push(arg);
  }
  return out;
}

/**
 * @param {number} pid -
 * @return {number|null} the real uid of the process, null when unknown/gone
 */
function uidOf(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = status.match(/^Uid:\s+(\d+)/m);
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

/**
 * @param {number} pid -
 * @return {string} its arguments, space-separated ('' when gone)
 */
function cmdlineOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch (_) {
    return '';
  }
}

const SIGNUM = { SIGUSR2: 12, SIGTTIN: 21, SIGTTOU: 22 };

/**
 * Whether the process has a handler for the signal (SigCgt in /proc/<pid>/status).
 * A master that is not egg-cluster-rs's (e.g. egg-cluster 2.5's) does not catch
 * SIGUSR2/SIGTTIN/SIGTTOU, and the default action of those would stop or kill it.
 * @param {number} pid -
 * @param {string} signal -
 * @return {boolean|null} null when unknown
 */
function catches(pid, signal) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = status.match(/^SigCgt:\s+([0-9a-f]+)/m);
    if (!m) return null;
    return (BigInt('0x' + m[1]) >> BigInt(SIGNUM[signal] - 1) & 1n) === 1n;
  } catch (_) {
    return null;
  }
}

/**
 * @param {string} [title] -
 * @return {Array<{pid: number, cmd: string}>} the masters found
 */
function findMasters(title) {
  const stdout = execFileSync('ps', [ '-wweo', 'pid,args' ], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const myUid = typeof process.getuid === 'function' ? process.getuid() : null;
  const out = [];
  for (const line of stdout.split('\n')) {
    if (!line || line.includes('/bin/sh') || !line.includes('node')) continue;
    const m = line.match(/^\s*(\d+)\s+(.*)/);
    if (!m) continue;
    const pid = Number(m[1]);
    const cmd = m[2];
    if (pid === process.pid) continue;
    if (!cmd.includes('start-cluster')) continue;
    if (title !== undefined && !cmd.includes(`"title":"${title}"`)) continue;
    if (myUid !== null && uidOf(pid) !== myUid) continue;
    out.push({ pid, cmd });
  }
  return out;
}

/**
 * @param {string} cmd - a master's arguments
 * @return {string} its title and baseDir when egg-scripts passed them, else the arguments
 */
function describeMaster(cmd) {
  try {
    // egg-scripts: `... start-cluster {"title":...,"baseDir":...} --title=T`
    const opts = JSON.parse(cmd.slice(cmd.indexOf('{', cmd.indexOf('start-cluster')), cmd.lastIndexOf('}') + 1));
    const parts = [];
    if (opts.title) parts.push(`--title=${opts.title}`);
    if (opts.baseDir) parts.push(opts.baseDir);
    if (parts.length) return parts.join('  ');
  } catch (_) {
    // not egg-scripts' JSON: the arguments as they are
  }
  return cmd.length > 200 ? cmd.slice(0, 197) + '...' : cmd;
}

function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    console.error(`egg-cluster-rs: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help || args._.length === 0) {
    (args.help ? console.log : console.error)(USAGE);
    return args.help ? 0 : 2;
  }

  const [ cmd, sub, ...rest ] = args._;
  if ([ 'status', 'reload', 'scale', 'upgrade', 'top' ].includes(cmd)) {
    // a master started here without the binary is the app's JS master (lib/fallback.js): it
    // neither catches these signals nor has a control socket
    const fallback = require('../lib/fallback');
    if (!fallback.loadNative()) {
      console.error(`egg-cluster-rs: ${cmd} needs the native master, and ${fallback.whyNoNative()}: ` +
        'masters here run the JS master (egg-cluster / @eggjs/cluster), which has no rolling reload, scaling, upgrade or status (see docs/platforms.md)');
      return 1;
    }
  }
  if (cmd === 'status' && sub === undefined) return status(args);
  if (cmd === 'upgrade' && sub === undefined) return upgrade(args);
  if (cmd === 'top' && sub === undefined) return top(args);
  let job;
  if (cmd === 'reload' && sub === undefined) {
    job = { request: 'reload', signal: 'SIGUSR2', what: 'rolling reload' };
  } else if (cmd === 'scale' && (sub === 'up' || sub === 'down') && rest.length === 0) {
    job = sub === 'up'
      ? { request: 'scale up', signal: 'SIGTTIN', what: 'add one app worker' }
      : { request: 'scale down', signal: 'SIGTTOU', what: 'retire one app worker' };
  } else {
    console.error(`egg-cluster-rs: unknown command: ${args._.join(' ')}\n\n${USAGE}`);
    return 2;
  }
  return args.wait ? waitJob(args, job) : signalJob(args, job);
}

/**
 * `reload`, `scale --no-wait`: signals the masters addressed and returns at once.
 * @param {Object} args - parsed
 * @param {{signal: string, what: string}} job -
 * @param {Array<{pid: number}>} [picked] - the masters, when already picked
 * @return {Promise<number>} exit code
 */
async function signalJob(args, job, picked) {
  const { signal, what } = job;
  const masters = picked || await pickServing(args);
  if (!masters) return 1;
  const signalled = [];
  for (const { pid } of masters) {
    if (catches(pid, signal) === false) {
      console.error(`egg-cluster-rs: skipping master pid ${pid}: it does not handle ${signal} (not an egg-cluster-rs master?)`);
      continue;
    }
    try {
      process.kill(pid, signal);
      signalled.push(pid);
    } catch (err) {
      if (err.code !== 'ESRCH') console.error(`egg-cluster-rs: could not signal ${pid}: ${err.message}`);
    }
  }
  if (!signalled.length) {
    console.error('egg-cluster-rs: no master was signalled');
    return 1;
  }
  console.log(`egg-cluster-rs: ${what}: sent ${signal} to master pid ${signalled.join(', ')}`);
  return 0;
}

// How long `reload`/`scale` wait for a line from the master. The master bounds each boot itself
// (EGG_CLUSTER_RS_RELOAD_TIMEOUT) and answers every waiter, even when it closes: this only
// covers a master that stopped answering at all.
const JOB_IDLE_MS = 15 * 60 * 1000;

/**
 * `reload`, `scale`: asks each master addressed over its control socket and waits for the
 * outcome, printing each step (a worker replaced, added, retired) as it comes.
 * @param {Object} args - parsed
 * @param {{request: string, signal: string, what: string}} job -
 * @return {Promise<number>} exit code: 0 when every master did it
 */
async function waitJob(args, job) {
  const masters = await pickServing(args);
  if (!masters) return 1;
  const codes = await Promise.all(masters.map(async ({ pid }) => {
    console.log(`egg-cluster-rs: ${job.what} on master pid ${pid}: waiting for the outcome...`);
    let answer;
    try {
      answer = await ask(pid, job.request, JOB_IDLE_MS,
        progress => console.log(`egg-cluster-rs: master pid ${pid}: ${progress}`));
    } catch (err) {
      if (!err.noSocket) {
        console.error(`egg-cluster-rs: ${err.message}`);
        return 1;
      }
      // a master whose control socket is off can still be signalled, without an outcome
      console.error(`egg-cluster-rs: ${err.message}: sending ${job.signal} instead (no outcome to wait for)`);
      return signalJob(args, job, [{ pid }]);
    }
    if (answer.error && answer.ok === undefined) {
      // a master older than this CLI: it knows the signal only
      console.error(`egg-cluster-rs: master pid ${pid} cannot report the outcome (${answer.error}; an older egg-cluster-rs?): sending ${job.signal} instead`);
      return signalJob(args, job, [{ pid }]);
    }
    if (answer.ok) {
      console.log(`egg-cluster-rs: ${job.what} done on master pid ${pid}: ${answer.summary}`);
      return 0;
    }
    console.error(`egg-cluster-rs: ${job.what} on master pid ${pid} failed: ${answer.error}`);
    return 1;
  }));
  return codes.every(c => c === 0) ? 0 : 1;
}

/**
 * The masters a reload, scale or upgrade addresses: `--pid`, else those found (by title) that
 * serve: a master that is starting (an upgrade's new master booting) or closing (the old one
 * draining after the hand-over) is skipped, so that a deploy's retry or a second deploy in that
 * window addresses the one that serves. Errors are printed.
 * @param {Object} args - parsed
 * @return {Promise<Array<{pid: number, cmd?: string, upgradingTo?: number}>|null>} null when none
 */
async function pickServing(args) {
  if (args.pid !== undefined) return pickMasters(args);
  const found = findMasters(args.title);
  const serving = [];
  const skipped = [];
  await Promise.all(found.map(async m => {
    let snap = null;
    try {
      snap = await askStatus(m.pid, 5000);
    } catch (_) {
      // no control socket (or no answer): its phase is unknown, it may still take a signal
    }
    const phase = snap && snap.master.phase;
    if (phase === 'starting' || phase === 'closing') skipped.push(`pid ${m.pid} is ${phase}`);
    else serving.push({ ...m, upgradingTo: snap && snap.master.upgradingTo });
  }));
  if (skipped.length) {
    console.error(`egg-cluster-rs: skipping master ${skipped.join(', ')} (an upgrade's new master booting, or the old one draining)`);
  }
  return pickMasters(args, serving.sort((a, b) => a.pid - b.pid), found.length);
}

/**
 * The masters a command for one master addresses: `--pid`, else those found by title; errors
 * are printed.
 * @param {Object} args - parsed
 * @param {Array<{pid: number, cmd: string}>} [candidates] - those found and not skipped
 * @param {number} [found] - how many were found before any was skipped
 * @return {Array<{pid: number, cmd?: string}>|null} null when none may be addressed
 */
function pickMasters(args, candidates, found) {
  let masters;
  if (args.pid !== undefined) {
    const uid = uidOf(args.pid);
    if (uid === null) {
      console.error(`egg-cluster-rs: no process with pid ${args.pid}`);
      return null;
    }
    if (typeof process.getuid === 'function' && uid !== process.getuid()) {
      console.error(`egg-cluster-rs: pid ${args.pid} is not a process of yours`);
      return null;
    }
    // A mistyped pid must not get SIGUSR2 (another node app may well catch it): the pid must
    // be a master by its arguments or by its control socket.
    const cmd = cmdlineOf(args.pid);
    if (!cmd.includes('start-cluster') && !controlSocket(args.pid)) {
      console.error(`egg-cluster-rs: pid ${args.pid} is not an egg-cluster-rs master (no "start-cluster" in its arguments, no control socket)`);
      return null;
    }
    masters = [{ pid: args.pid }];
  } else {
    masters = candidates || findMasters(args.title);
    if (!masters.length) {
      const why = found ? `: the ${found} found are starting or closing; try again once one is ready` : ' (looked for your "start-cluster" processes)';
      console.error(`egg-cluster-rs: no running egg-cluster-rs master found${args.title !== undefined ? ` with --title=${args.title}` : ''}${why}`);
      return null;
    }
    if (masters.length > 1 && args.title === undefined) {
      console.error(`egg-cluster-rs: ${masters.length} masters found; pick one with --title=T or --pid=N (nothing was signalled):\n` +
        masters.map(m => `  pid ${m.pid}  ${describeMaster(m.cmd)}`).join('\n'));
      return null;
    }
  }
  return masters;
}

/**
 * Where the master `pid` of this user has its control socket: the master computes the same
 * paths from its own environment (src/ops/control.rs), which may differ from ours, so both
 * candidates are tried.
 * @param {number} pid -
 * @return {string[]} -
 */
function socketPaths(pid) {
  const uid = process.getuid();
  const out = [];
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg && xdg.startsWith('/')) out.push(path.join(xdg, 'egg-cluster-rs', `${pid}.sock`));
  for (const tmp of [ process.env.TMPDIR, '/tmp' ]) {
    if (!tmp || !tmp.startsWith('/')) continue;
    out.push(path.join(tmp, `egg-cluster-rs-${uid}`, `${pid}.sock`));
    // The private fallback (mkdtemp) a master uses when the usual directory is not its own.
    let names = [];
    try {
      names = fs.readdirSync(tmp).filter(n => n.startsWith(`egg-cluster-rs-${uid}.`)).sort();
    } catch (_) {
      // an unreadable tmp dir has no fallback of ours
    }
    for (const name of names) {
      const dir = path.join(tmp, name);
      try {
        const st = fs.lstatSync(dir);
        if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0) out.push(path.join(dir, `${pid}.sock`));
      } catch (_) {
        // gone meanwhile
      }
    }
  }
  return [ ...new Set(out) ];
}

/**
 * @param {number} pid -
 * @return {boolean} whether a process with this pid exists (of any user)
 */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/**
 * @param {number} pid -
 * @return {string|undefined} the control socket of the master `pid` of this user, if any
 */
function controlSocket(pid) {
  const uid = process.getuid();
  return socketPaths(pid).find(p => {
    try {
      const st = fs.lstatSync(p);
      return st.isSocket() && st.uid === uid;
    } catch (_) {
      return false;
    }
  });
}

/**
 * Asks the master `pid` for its status over its control socket.
 * @param {number} pid -
 * @param {number} [timeout] -
 * @return {Promise<Object>} the snapshot
 */
async function askStatus(pid, timeout = 5000) {
  const snapshot = await ask(pid, 'status', timeout);
  if (snapshot.error) throw new Error(`master pid ${pid}: ${snapshot.error}`);
  return snapshot;
}

/**
 * One request line to the master `pid`'s control socket; JSON lines back until it closes
 * (docs/operations.md, "Control socket protocol"): `{"progress": ...}` lines as the work goes,
 * then the answer.
 * @param {number} pid -
 * @param {string} request - `status`, `upgrade`, `reload`, `scale up` or `scale down`
 * @param {number} timeout - ms without a line before giving up
 * @param {Function} [onProgress] - called with each progress line's text
 * @return {Promise<Object>} the answer (the last line)
 */
async function ask(pid, request, timeout, onProgress) {
  const net = require('net');
  const uid = process.getuid();
  const sock = controlSocket(pid);
  if (!sock) {
    if (!alive(pid)) throw new Error(`master pid ${pid} is not running`);
    const err = new Error(`master pid ${pid} has no control socket (not an egg-cluster-rs master of yours, or started before status existed)`);
    err.noSocket = true;
    throw err;
  }
  const answer = await new Promise((resolve, reject) => {
    const conn = net.connect(sock);
    let data = '';
    let last;
    const take = line => {
      if (!line.trim()) return;
      const msg = JSON.parse(line);
      if (typeof msg.progress === 'string' && msg.ok === undefined) {
        if (onProgress) onProgress(msg.progress);
      } else {
        last = msg;
      }
    };
    conn.setEncoding('utf8');
    conn.setTimeout(timeout, () => conn.destroy(new Error(`no answer from master pid ${pid} within ${timeout}ms`)));
    conn.on('connect', () => conn.write(`${request}\n`));
    conn.on('data', chunk => {
      data += chunk;
      let i;
      try {
        while ((i = data.indexOf('\n')) >= 0) {
          take(data.slice(0, i));
          data = data.slice(i + 1);
        }
      } catch (err) {
        conn.destroy(new Error(`master pid ${pid} answered something that is not JSON: ${err.message}`));
      }
    });
    conn.on('end', () => {
      try {
        take(data);
      } catch (err) {
        return reject(new Error(`master pid ${pid} answered something that is not JSON: ${err.message}`));
      }
      if (last === undefined) reject(new Error(`master pid ${pid} closed the connection without an answer (exiting?)`));
      else resolve(last);
    });
    conn.on('error', reject);
  }).catch(err => {
    if (err.code !== 'ECONNREFUSED') throw err;
    // Nobody listens: the master died without removing its socket (SIGKILL, OOM killer).
    if (alive(pid)) throw new Error(`master pid ${pid} is running but does not answer on ${sock} (connection refused)`);
    let removed = false;
    try {
      const st = fs.lstatSync(sock);
      if (st.isSocket() && st.uid === uid) {
        fs.unlinkSync(sock);
        removed = true;
      }
    } catch (_) {
      // removed by someone else meanwhile
    }
    throw new Error(`master pid ${pid} is gone (no such process)${removed ? `; removed its stale control socket ${sock}` : ''}`);
  });
  return answer;
}

function fmtBytes(n) {
  if (n == null) return '-';
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)}G`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)}M`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)}K`;
  return `${n}B`;
}

function fmtAge(ms) {
  if (ms == null) return '-';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

/**
 * @param {Object} snap - a status snapshot
 * @param {number} [now] -
 * @return {string} the table `status` prints
 */
function formatStatus(snap, now = Date.now()) {
  const m = snap.master;
  const head = `master ${m.pid}: ${m.phase}, up ${fmtAge(m.uptimeMs)}, ${m.serving}/${m.workers} app workers serving, ` +
    `healthy ${m.healthy ? 'yes' : 'no'}, ready ${m.ready ? 'yes' : 'no'}, reforks ${m.reforks}` +
    (m.backoffMs ? `, backoff ${m.backoffMs}ms` : '') +
    `, rss ${fmtBytes(m.rss)}, cpu ${m.cpu == null ? '-' : `${m.cpu}%`}, relayed ${m.messagesRelayed} msgs / ${fmtBytes(m.bytesRelayed)}` +
    (m.stickyHandedOver ? `, sticky ${m.stickyHandedOver}` : '') + (m.malformed ? `, malformed ${m.malformed}` : '') +
    (m.hungReplaced ? `, hung workers replaced ${m.hungReplaced}` : '') +
    (m.reforkHeld ? `\ndead app workers not replaced now: ${m.reforkHeld}` : '') +
    (m.upgradingTo ? `\nupgrading: new master pid ${m.upgradingTo} is booting; this one serves until it is ready` : '');
  const rows = [[ 'ROLE', 'ID', 'PID', 'SLOT', 'STATE', 'UP', 'RESTARTS', 'LAST EXIT', 'RSS', 'CPU', 'MSGS', 'BYTES', 'STICKY', 'MALFORMED', 'LAG', 'HUNG' ]];
  for (const c of snap.children) {
    const last = c.lastExit ? `${c.lastExit.signal || `code ${c.lastExit.code}`} ${fmtAge(now - c.lastExit.at)} ago` : '-';
    rows.push([
      c.role, String(c.id), String(c.pid), c.slot == null ? '-' : String(c.slot), c.state, fmtAge(now - c.startedAt),
      String(c.restarts), last, fmtBytes(c.rss), c.cpu == null ? '-' : `${c.cpu}%`, String(c.messagesRelayed),
      fmtBytes(c.bytesRelayed), String(c.stickyHandedOver), String(c.malformed),
      c.lagMs == null ? '-' : `${c.lagMs}ms`, c.hungSince == null ? '-' : `${fmtAge(now - c.hungSince)} ago`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)));
  return [ head, ...rows.map(r => r.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()) ].join('\n');
}

async function status(args) {
  let pids;
  if (args.pid !== undefined) pids = [ args.pid ];
  else {
    pids = findMasters(args.title).map(m => m.pid);
    if (!pids.length) {
      console.error(`egg-cluster-rs: no running egg-cluster-rs master found${args.title !== undefined ? ` with --title=${args.title}` : ''} (looked for your "start-cluster" processes; use --pid=N for others)`);
      return 1;
    }
  }
  let code = 0;
  const out = [];
  for (const pid of pids) {
    try {
      const snap = await askStatus(pid);
      out.push(args.json ? snap : formatStatus(snap));
    } catch (err) {
      console.error(`egg-cluster-rs: ${err.message}`);
      code = 1;
    }
  }
  if (args.json) {
    if (out.length) console.log(JSON.stringify(out.length === 1 ? out[0] : out, null, 2));
  } else if (out.length) console.log(out.join('\n\n'));
  return out.length ? code : 1;
}

/**
 * `upgrade`: asks the one master addressed for an upgrade and waits for the outcome. The master
 * bounds the wait itself (EGG_CLUSTER_RS_UPGRADE_TIMEOUT, then it stops the new master), so
 * the client waits that long and a margin.
 * @param {Object} args - parsed
 * @return {Promise<number>} exit code
 */
async function upgrade(args) {
  const limit = Number(process.env.EGG_CLUSTER_RS_UPGRADE_TIMEOUT) > 0 ? Number(process.env.EGG_CLUSTER_RS_UPGRADE_TIMEOUT) : 300000;
  let pid;
  let answer;
  // The master picked may hand over to its new master between our look and our request: it
  // then refuses as closing, and the look is taken again (once).
  for (let attempt = 0; attempt < 2; attempt++) {
    const masters = await pickServing(args);
    if (!masters) return 1;
    if (masters.length > 1) {
      console.error(`egg-cluster-rs: ${masters.length} masters match; an upgrade addresses one: pick it with --pid=N:\n` +
        masters.map(m => `  pid ${m.pid}  ${describeMaster(m.cmd || cmdlineOf(m.pid))}`).join('\n'));
      return 1;
    }
    pid = masters[0].pid;
    if (masters[0].upgradingTo) {
      console.log(`egg-cluster-rs: master pid ${pid} is upgrading to new master pid ${masters[0].upgradingTo} already: joining that upgrade, waiting for its ready...`);
    } else {
      console.log(`egg-cluster-rs: upgrade of master pid ${pid}: starting a new master, waiting for its ready...`);
    }
    try {
      answer = await ask(pid, 'upgrade', limit + 90000);
    } catch (err) {
      console.error(`egg-cluster-rs: ${err.message}`);
      return 1;
    }
    if (answer.ok || args.pid !== undefined || answer.error !== 'this master is closing') break;
  }
  if (answer.ok) {
    console.log(`egg-cluster-rs: upgrade done: new master pid ${answer.pid} serves; master pid ${pid} is closing`);
    return 0;
  }
  console.error(`egg-cluster-rs: upgrade of master pid ${pid} failed: ${answer.error || 'unknown request (a master older than upgrade?)'}`);
  return 1;
}

/**
 * `top`: the live view (lib/top.js) of the one master addressed.
 * @param {Object} args - parsed
 * @return {Promise<number>} exit code
 */
async function top(args) {
  const masters = pickMasters(args);
  if (!masters) return 1;
  if (masters.length > 1) {
    console.error(`egg-cluster-rs: ${masters.length} masters match; top shows one: pick it with --pid=N:\n` +
      masters.map(m => `  pid ${m.pid}  ${describeMaster(m.cmd)}`).join('\n'));
    return 1;
  }
  return require('../lib/top').run({ pid: masters[0].pid, once: args.once, ask: pid => askStatus(pid, 2000) });
}

if (require.main === module) {
  Promise.resolve(main(process.argv.slice(2))).then(code => {
    process.exitCode = code;
  });
}

module.exports = { main, parseArgs, findMasters, pickServing, catches, askStatus, ask, formatStatus, socketPaths };
