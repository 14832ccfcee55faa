#!/usr/bin/env node
'use strict';

/**
 * egg-cluster-rs reload [--title=T]       rolling reload of the app workers (SIGUSR2)
 * egg-cluster-rs scale up|down [--title=T] add / retire one app worker (SIGTTIN / SIGTTOU)
 *
 * Finds the master like `egg-scripts stop` does: `ps -wweo "pid,args"`, node
 * processes whose args include `start-cluster` (and `"title":"T"` with --title),
 * restricted to the current user's processes.
 */

const fs = require('fs');
const { execFileSync } = require('child_process');

const USAGE = `Usage:
  egg-cluster-rs reload [--title=T]        rolling reload: replace the app workers one at a time (SIGUSR2)
  egg-cluster-rs scale up|down [--title=T] add (SIGTTIN) / retire (SIGTTOU) one app worker

Options:
  --title=T    only the master started with egg-scripts start --title=T
  -h, --help   show this help

The master is found as \`egg-scripts stop\` finds it: a node process of the
current user whose arguments contain "start-cluster" (and "title":"T").`;

function parseArgs(argv) {
  const out = { _: [], title: undefined, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') out.help = true;
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
  let signal;
  let what;
  if (cmd === 'reload' && sub === undefined) {
    signal = 'SIGUSR2';
    what = 'rolling reload';
  } else if (cmd === 'scale' && (sub === 'up' || sub === 'down') && rest.length === 0) {
    signal = sub === 'up' ? 'SIGTTIN' : 'SIGTTOU';
    what = sub === 'up' ? 'add one app worker' : 'retire one app worker';
  } else {
    console.error(`egg-cluster-rs: unknown command: ${args._.join(' ')}\n\n${USAGE}`);
    return 2;
  }

  const masters = findMasters(args.title);
  if (!masters.length) {
    console.error(`egg-cluster-rs: no running egg-cluster-rs master found${args.title !== undefined ? ` with --title=${args.title}` : ''} (looked for your "start-cluster" processes)`);
    return 1;
  }
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

if (require.main === module) {
  process.exitCode = main(process.argv.slice(2));
}

module.exports = { main, parseArgs, findMasters, catches };
