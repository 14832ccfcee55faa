'use strict';

/**
 * /proc readers: CPU time (utime+stime from /proc/<pid>/stat, in ms), VmRSS, process trees.
 */

const fs = require('fs');
const { execFileSync } = require('child_process');

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', [ 'CLK_TCK' ], { encoding: 'utf8' }).trim()) || 100;
} catch (_) {
  // getconf missing: Linux's USER_HZ is 100 everywhere that matters
}

/**
 * @param {number|string} pid - a pid, 'self', or '<pid>/task/<tid>' for one thread
 * @return {?{ppid:number, utime:number, stime:number, cutime:number, cstime:number, starttime:number}}
 *   clock ticks (starttime: since boot, tells a process from a later one with its pid)
 */
function stat(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (_) {
    return null;
  }
  // comm may contain spaces and parentheses: fields start after the last ')'
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field N is f[N - 3]
  return {
    state: f[0],
    ppid: Number(f[1]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
    starttime: Number(f[19]),
  };
}

/** @return {?number} utime+stime of pid in ms */
function cpuMs(pid) {
  const s = stat(pid);
  return s ? (s.utime + s.stime) * 1000 / clkTck : null;
}

/** @return {number} CPU time of this process's waited-for children (cutime+cstime) in ms */
function childrenCpuMs() {
  const s = stat('self');
  return (s.cutime + s.cstime) * 1000 / clkTck;
}

/** @return {?number} VmRSS of pid in KiB */
function rssKiB(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

/**
 * VmRSS split as the kernel counts it: RssAnon (the process's own heap and stacks: what a leak
 * grows) and RssFile (pages of mapped files, node's binary and the addon among them, shared
 * with every other process that maps them, resident as the page cache and fault-around leave
 * them).
 * @return {?{anonKiB: number, fileKiB: number}} of pid, in KiB
 */
function memKiB(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const anon = /^RssAnon:\s+(\d+) kB/m.exec(text);
    const file = /^RssFile:\s+(\d+) kB/m.exec(text);
    return anon && file ? { anonKiB: Number(anon[1]), fileKiB: Number(file[1]) } : null;
  } catch (_) {
    return null;
  }
}

/** @return {?number} the threads of pid (`Threads:` of /proc/<pid>/status) */
function threadCount(pid) {
  try {
    const m = /^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

/** @return {?number} the open fds of pid (entries of /proc/<pid>/fd) */
function fdCount(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch (_) {
    return null;
  }
}

/**
 * The machine's CPU time so far, from the `cpu` line of /proc/stat, in ms summed over all CPUs.
 * @return {{busy: number, steal: number, total: number}} busy = user+nice+system+irq+softirq
 */
function machine() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [ user, nice, system, idle, iowait, irq, softirq, steal ] = f;
  const k = 1000 / clkTck;
  return {
    busy: (user + nice + system + irq + softirq) * k,
    proc: (user + nice + system) * k,
    steal: (steal || 0) * k,
    total: (user + nice + system + idle + iowait + irq + softirq + (steal || 0)) * k,
  };
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch (_) {
    return [];
  }
}

/** @return {Map<number, number>} pid -> ppid of every live process */
function allPpids() {
  const map = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(name);
    if (s && s.state !== 'Z') map.set(Number(name), s.ppid);
  }
  return map;
}

/** @return {number[]} every live descendant of pid (not pid itself) */
function descendants(pid) {
  const ppids = allPpids();
  const out = [];
  const walk = p => {
    for (const [ child, parent ] of ppids) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

/**
 * The master's direct children by role, from their command lines.
 * @return {{agent: number[], app: number[], other: number[]}} pids
 */
function clusterChildren(masterPid) {
  const ppids = allPpids();
  const out = { agent: [], app: [], other: [] };
  for (const [ pid, ppid ] of ppids) {
    if (ppid !== masterPid) continue;
    const cmd = cmdline(pid).join(' ');
    if (/agent_worker\.js/.test(cmd)) out.agent.push(pid);
    else if (/app_worker\.js/.test(cmd)) out.app.push(pid);
    else out.other.push(pid);
  }
  return out;
}

// A process is gone once all its threads are: a zombie main thread whose other threads still
// run their exit holds its sockets and files (as the tests' helper isAlive).
function alive(pid) {
  const s = stat(pid);
  if (!s) return false;
  if (s.state !== 'Z') return true;
  let tasks;
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch (_) {
    return false;
  }
  return tasks.some(tid => {
    const t = stat(`${pid}/task/${tid}`);
    return !!t && t.state !== 'Z';
  });
}

module.exports = { clkTck, machine, stat, cpuMs, childrenCpuMs, rssKiB, memKiB, threadCount, fdCount, cmdline, descendants, clusterChildren, alive };
