'use strict';

/**
 * `egg-cluster-rs top`: a live view of one master's cluster, like htop or `pm2 monit`, drawn
 * from its status snapshot (the control socket's `status`, once a second). Per child: role and
 * id, pid, state, uptime, restarts, CPU, RSS, V8 heap, event-loop utilization and lag, and for
 * app workers requests/s, p50/p99 latency and requests in flight (rates and percentiles over
 * the last few seconds, from the cumulative figures the heartbeats carry); then the totals.
 * Fits 80x24; `q` (or Ctrl-C) quits; `c`, `m`, `r`, `i` sort by CPU, memory, requests, id.
 * `--once` (or a stdout that is not a terminal) prints one frame, its rates over one second.
 */

const BUCKETS = require('./child_stats').BUCKETS;

// rates are taken against the oldest frame at most this old
const WINDOW_MS = 3000;
// a child that left stays on the screen this long, as `gone`
const GONE_MS = 5000;

const SORTS = {
  i: { name: 'role, id', key: null },
  c: { name: 'CPU', key: r => r.cpu },
  m: { name: 'memory', key: r => r.rss },
  r: { name: 'requests', key: r => r.rps },
};

// name, width, align right?
const COLUMNS = [
  [ 'WORKER', 7, false ], [ 'PID', 7, true ], [ 'STATE', 8, false ], [ 'UP', 4, true ],
  [ 'RST', 3, true ], [ 'CPU%', 4, true ], [ 'RSS', 4, true ], [ 'HEAP', 4, true ],
  [ 'ELU%', 4, true ], [ 'LAG', 4, true ], [ 'REQ/S', 5, true ], [ 'P50', 4, true ],
  [ 'P99', 4, true ], [ 'INFL', 4, true ],
];

function fit(text, width, right) {
  const s = String(text);
  if (s.length > width) return s.slice(0, width);
  return right ? s.padStart(width) : s.padEnd(width);
}

function bytes(n) {
  if (n == null) return '-';
  if (n >= 10 * 2 ** 30) return `${Math.round(n / 2 ** 30)}G`;
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)}G`;
  if (n >= 2 ** 20) return `${Math.round(n / 2 ** 20)}M`;
  return `${Math.round(n / 2 ** 10)}K`;
}

function age(ms) {
  if (ms == null) return '-';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 100) return `${s}s`;
  if (s < 6000) return `${Math.round(s / 60)}m`;
  if (s < 360000) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

// a number in at most 4-5 characters
function num(v, digits = 1) {
  if (v == null || !Number.isFinite(v)) return '-';
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(digits);
}

/**
 * The request figures of a child between two of its stats (cumulative), or since it started.
 * @param {Object} now - stats.http now
 * @param {Object} [before] - stats.http earlier
 * @param {number} seconds - between the two
 * @return {{rps: ?number, p50: ?number, p99: ?number}} p50/p99 in ms
 */
function requestFigures(now, before, seconds) {
  if (!now || !before || !(seconds > 0)) return { rps: null, p50: null, p99: null };
  const delta = now.buckets.map((n, i) => n - (before.buckets[i] || 0));
  const count = delta.reduce((a, b) => a + b, 0);
  if (count < 0) return { rps: null, p50: null, p99: null };
  return { rps: count / seconds, p50: quantile(delta, count, 0.5), p99: quantile(delta, count, 0.99) };
}

/**
 * A quantile of a histogram's bucket counts, as Prometheus' histogram_quantile interpolates
 * @param {number[]} counts - per bucket (BUCKETS, then +Inf), not cumulative
 * @param {number} total -
 * @param {number} q - 0..1
 * @return {?number} ms
 */
function quantile(counts, total, q) {
  if (!total) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    if (below + counts[i] >= rank && counts[i] > 0) {
      if (i >= BUCKETS.length) return BUCKETS[BUCKETS.length - 1] * 1000;
      const lower = i === 0 ? 0 : BUCKETS[i - 1];
      const upper = BUCKETS[i];
      return (lower + (upper - lower) * (rank - below) / counts[i]) * 1000;
    }
    below += counts[i];
  }
  return null;
}

function sumHttp(list) {
  const out = { buckets: new Array(BUCKETS.length + 1).fill(0), inFlight: 0, codes: [ 0, 0, 0, 0, 0, 0 ] };
  for (const h of list) {
    if (!h) continue;
    h.buckets.forEach((n, i) => { out.buckets[i] += n; });
    h.codes.forEach((n, i) => { out.codes[i] += n; });
    out.inFlight += h.inFlight;
  }
  return out;
}

/**
 * One frame of the view.
 * @param {Object[]} frames - snapshots, oldest first, each `{at, snap}` (`snap` null: no answer)
 * @param {Object} [opts] - { width, height, sort (a key of SORTS), gone: Map pid -> {row, at}, error }
 * @return {string[]} the lines, each at most `width` wide, at most `height` of them
 */
function frame(frames, opts = {}) {
  const width = Math.max(20, opts.width || 80);
  const height = Math.max(6, opts.height || 24);
  const last = frames[frames.length - 1];
  const snap = last && last.snap;
  const now = last ? last.at : Date.now();
  const lines = [];
  const clock = new Date(now).toTimeString().slice(0, 8);
  if (!snap) {
    lines.push(`top - ${opts.error || 'waiting for the master'}`.slice(0, width - 9).padEnd(width - 9) + ` ${clock}`);
    lines.push('');
    lines.push('q quit');
    return lines.map(l => l.slice(0, width));
  }
  // the oldest frame within the window that the master answered
  const base = frames.find(f => f.snap && f !== last && now - f.at <= WINDOW_MS + 500);
  const seconds = base ? (now - base.at) / 1000 : 0;
  const earlier = new Map(base ? base.snap.children.map(c => [ c.pid, c ]) : []);
  const m = snap.master;

  const rows = snap.children.map(c => {
    const before = earlier.get(c.pid);
    const http = c.stats && c.stats.http;
    const figures = requestFigures(http, before && before.stats && before.stats.http, seconds);
    return {
      role: c.role,
      id: c.id,
      pid: c.pid,
      state: c.hungSince != null ? 'hung' : c.state,
      up: now - c.startedAt,
      restarts: c.restarts,
      cpu: c.cpu,
      rss: c.rss,
      heap: c.stats ? c.stats.heapUsed : null,
      elu: c.stats ? c.stats.elu * 100 : null,
      lag: c.lagMs,
      http,
      ...figures,
      inFlight: http ? http.inFlight : null,
    };
  });
  // who left since: shown as gone for a while
  const gone = opts.gone || new Map();
  const present = new Set(rows.map(r => r.pid));
  for (const f of frames) {
    if (!f.snap || f === last) continue;
    for (const c of f.snap.children) {
      if (!present.has(c.pid) && !gone.has(c.pid)) gone.set(c.pid, { at: f.at, row: { role: c.role, id: c.id, pid: c.pid, state: 'gone', restarts: c.restarts } });
    }
  }
  for (const [ pid, g ] of gone) {
    if (present.has(pid) || now - g.at > GONE_MS) gone.delete(pid);
    else rows.push(g.row);
  }
  const sort = SORTS[opts.sort] || SORTS.i;
  rows.sort((a, b) => {
    if (sort.key) {
      const d = (sort.key(b) || 0) - (sort.key(a) || 0);
      if (d) return d;
    }
    return (a.role === 'agent' ? 0 : 1) - (b.role === 'agent' ? 0 : 1) || a.id - b.id;
  });

  const serving = rows.filter(r => r.http);
  const total = requestFigures(sumHttp(serving.map(r => r.http)),
    sumHttp(serving.map(r => { const c = earlier.get(r.pid); return c && c.stats && c.stats.http; })), seconds);
  const allHttp = sumHttp(serving.map(r => r.http));
  const cpu = rows.reduce((a, r) => a + (r.cpu || 0), m.cpu || 0);
  const rss = rows.reduce((a, r) => a + (r.rss || 0), m.rss || 0);

  const title = `top - master ${m.pid} ${m.phase}, up ${age(m.uptimeMs)}, ` +
    `${m.serving}/${m.workers} serving, ${m.healthy ? 'healthy' : 'UNHEALTHY'}`;
  lines.push(title.slice(0, width - 9).padEnd(width - 9) + ` ${clock}`);
  lines.push(`requests ${num(total.rps)}/s  p50 ${num(total.p50)}ms  p99 ${num(total.p99)}ms  in flight ${allHttp.inFlight}  ` +
    `5xx ${allHttp.codes[4]}  reforks ${m.reforks}${m.hung ? `  hung ${m.hung}` : ''}`);
  lines.push(`master cpu ${num(m.cpu)}%  rss ${bytes(m.rss)}  ·  tree cpu ${num(cpu)}%  rss ${bytes(rss)}` +
    (m.reforkHeld ? '  · reforks held' : ''));
  lines.push(COLUMNS.map(([ name, w, right ]) => fit(name, w, right)).join(' '));

  const room = height - lines.length - 2;
  const shown = rows.length > room ? rows.slice(0, room - 1) : rows;
  for (const r of shown) {
    const cells = [
      `${r.role}#${r.id}`, r.pid, r.state, r.state === 'gone' ? '-' : age(r.up), r.restarts,
      num(r.cpu), bytes(r.rss), bytes(r.heap), num(r.elu, 0), r.lag == null ? '-' : num(r.lag),
      num(r.rps), num(r.p50), num(r.p99), r.inFlight == null ? '-' : r.inFlight,
    ];
    lines.push(COLUMNS.map(([ , w, right ], i) => fit(cells[i] == null ? '-' : cells[i], w, right)).join(' '));
  }
  if (shown.length < rows.length) lines.push(`  ... ${rows.length - shown.length} more`);
  lines.push(`total ${rows.length} children: cpu ${num(cpu)}%  rss ${bytes(rss)}  ${num(total.rps)} req/s`);
  lines.push(`LAG P50 P99 in ms · sorted by ${sort.name} (c m r i) · q quit`);
  return lines.map(l => l.slice(0, width));
}

/**
 * Runs the view until `q` (live) or for one frame (`once`).
 * @param {Object} opts - { pid, once, ask: pid => Promise<snapshot>, out: stream, input: stream }
 * @return {Promise<number>} exit code
 */
async function run({ pid, once, ask, out = process.stdout, input = process.stdin }) {
  const frames = [];
  const gone = new Map();
  let error = null;
  const poll = async () => {
    let snap = null;
    try {
      snap = await ask(pid);
      error = null;
    } catch (err) {
      error = err.message;
    }
    frames.push({ at: Date.now(), snap });
    while (frames.length > 1 && Date.now() - frames[0].at > WINDOW_MS + 1000) frames.shift();
    return snap;
  };

  if (once || !out.isTTY) {
    // two looks a second apart: the rates are over that second
    if (!await poll()) {
      console.error(`egg-cluster-rs: ${error}`);
      return 1;
    }
    await new Promise(r => setTimeout(r, 1000));
    await poll();
    out.write(frame(frames, { width: 80, height: 24, gone, error }).join('\n') + '\n');
    return 0;
  }

  let sort = 'i';
  let timer = null;
  let stopped = false;
  const draw = () => {
    const lines = frame(frames, { width: out.columns || 80, height: out.rows || 24, sort, gone, error });
    out.write('\x1b[H' + lines.map(l => `${l}\x1b[K`).join('\r\n') + '\x1b[J');
  };
  return new Promise(resolve => {
    const quit = () => {
      stopped = true;
      clearTimeout(timer);
      if (input.isTTY) input.setRawMode(false);
      input.pause();
      input.removeListener('data', onKey);
      out.removeListener('resize', draw);
      // cleared first: a terminal without an alternate screen is left clean too
      out.write('\x1b[H\x1b[2J\x1b[?25h\x1b[?1049l');
      resolve(0);
    };
    const onKey = data => {
      const key = String(data);
      if (key === 'q' || key === 'Q' || key === '\x03' || key === '\x1b') return quit();
      if (SORTS[key]) {
        sort = key;
        draw();
      }
    };
    const tick = async () => {
      await poll();
      if (stopped) return;
      draw();
      timer = setTimeout(tick, 1000);
    };
    out.write('\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J');
    if (input.isTTY) input.setRawMode(true);
    input.resume();
    input.on('data', onKey);
    out.on('resize', draw);
    tick();
  });
}

module.exports = { run, frame, quantile, requestFigures };
