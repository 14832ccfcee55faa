'use strict';

/**
 * bench/soak.js's figures: the table per event kind, the drift of the master's fds and RSS, and
 * the SVG chart of the run (written here, no dependency).
 */

const { median } = require('./stats');

const KINDS = [
  [ 'upgrade', 'master upgrade' ],
  [ 'reload', 'rolling reload' ],
  [ 'scale-up', 'scale up' ],
  [ 'scale-down', 'scale down' ],
  [ 'kill', 'app worker SIGKILL' ],
  [ 'agent-kill', 'agent SIGKILL' ],
  [ 'hang', 'app worker hung' ],
];

const COLORS = {
  upgrade: '#7b3294',
  reload: '#1f78b4',
  'scale-up': '#33a02c',
  'scale-down': '#b2df8a',
  kill: '#e31a1c',
  'agent-kill': '#ff7f00',
  hang: '#6a3d9a',
};

function pct(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)] : null;
}

function secs(ms) {
  return ms == null ? '-' : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/**
 * @param {Object[]} events - { kind, failed, requests, recoverMs }
 * @return {string} a markdown table, one row per event kind that happened
 */
function table(events) {
  const rows = [
    '| event | count | failed requests | requests during | time to recover p50 / p95 / max |',
    '| --- | ---: | ---: | ---: | --- |',
  ];
  for (const [ kind, name ] of KINDS) {
    const xs = events.filter(e => e.kind === kind);
    if (!xs.length) continue;
    const rec = xs.map(e => e.recoverMs).sort((a, b) => a - b);
    const failed = xs.reduce((a, e) => a + e.failed, 0);
    const requests = xs.reduce((a, e) => a + e.requests, 0);
    rows.push(`| ${name} | ${xs.length.toLocaleString('en-US')} | ${failed.toLocaleString('en-US')} | ` +
      `${requests.toLocaleString('en-US')} | ${secs(pct(rec, 0.5))} / ${secs(pct(rec, 0.95))} / ${secs(rec[rec.length - 1])} |`);
  }
  return rows.join('\n');
}

/**
 * The master's fds and RSS after the warm-up against the end, each the median of `k` samples
 * taken once an event had settled (all workers serving, every client answered since), on the
 * master that ran the mixed schedule (the last one: upgrades come first), with as many app
 * workers as at the start (each worker is a channel and a pidfd of the master's).
 * @param {Object[]} settled - { masterPid, workers, fds, rssKiB } in order
 * @return {?{k, warm, base: {fds, rssKiB, anonKiB, fileKiB}, end: {...}, fdPct, rssPct, anonPct}} null when too few
 */
function drift(settled, workers) {
  if (!settled.length) return null;
  const last = settled[settled.length - 1].masterPid;
  const xs = settled.filter(s => s.masterPid === last && s.workers === workers && s.fds != null && s.rssKiB != null);
  const k = Math.max(3, Math.min(20, Math.floor(xs.length * 0.05)));
  // The first k settled samples are the warm-up, the next k the baseline, the last k the end.
  if (xs.length < 3 * k) return null;
  const at = list => ({
    fds: median(list.map(s => s.fds)),
    rssKiB: median(list.map(s => s.rssKiB)),
    anonKiB: median(list.map(s => s.anonKiB)),
    fileKiB: median(list.map(s => s.fileKiB)),
  });
  const base = at(xs.slice(k, 2 * k));
  const end = at(xs.slice(-k));
  const round1 = x => Math.round(x * 10) / 10;
  return {
    k,
    samples: xs.length,
    base,
    end,
    fdPct: round1((end.fds - base.fds) / base.fds * 100),
    rssPct: round1((end.rssKiB - base.rssKiB) / base.rssKiB * 100),
    anonPct: round1((end.anonKiB - base.anonKiB) / base.anonKiB * 100),
  };
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmtT(s) {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/**
 * @param {Object[]} samples - one a second: { t (s since start), rssKiB, fds, threads, tree, ok, failed }
 * @param {Object[]} events - { kind, t (s since start) }
 * @param {string} title -
 * @return {string} an SVG document: four panels over time (master RSS, master fds and threads
 *   with the tree's process count, requests/s, failed requests/s) and a strip of event marks
 */
function svg(samples, events, title) {
  const W = 1000;
  const left = 70;
  const right = 20;
  const plotW = W - left - right;
  const panelH = 110;
  const gap = 34;
  const top = 44;
  const panels = [
    { name: 'master RSS · its anonymous part (MiB)', series: [[ s => s.rssKiB / 1024, '#1f78b4', 'max' ], [ s => s.anonKiB / 1024, '#33a02c', 'max' ]] },
    { name: 'master fds · threads · processes in the tree', series: [[ s => s.fds, '#e31a1c', 'max' ], [ s => s.threads, '#33a02c', 'max' ], [ s => s.tree, '#ff7f00', 'max' ]] },
    { name: 'requests/s answered', series: [[ s => s.ok, '#1f78b4', 'mean' ]] },
    { name: 'failed requests/s', series: [[ s => s.failed, '#e31a1c', 'max' ]] },
  ];
  const stripH = 14 * KINDS.length;
  const H = top + panels.length * (panelH + gap) + stripH + 40;
  const tMax = Math.max(1, samples.length ? samples[samples.length - 1].t : 1);
  const x = t => left + t / tMax * plotW;
  // at most one point per pixel column: each bucket keeps its max (a leak or a spike stays
  // visible) or its mean (a rate)
  const buckets = Math.min(plotW, samples.length);
  const bucketOf = s => Math.min(buckets - 1, Math.floor(s.t / tMax * buckets));
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  panels.forEach((p, i) => {
    const y0 = top + i * (panelH + gap);
    const lines = p.series.map(([ f, color, agg ]) => {
      const acc = Array.from({ length: buckets }, () => ({ sum: 0, n: 0, max: -Infinity, t: 0 }));
      for (const s of samples) {
        const v = f(s);
        if (v == null || !Number.isFinite(v)) continue;
        const b = acc[bucketOf(s)];
        b.sum += v;
        b.n++;
        b.max = Math.max(b.max, v);
        b.t = s.t;
      }
      const pts = acc.filter(b => b.n).map(b => ({ t: b.t, v: agg === 'max' ? b.max : b.sum / b.n }));
      return { pts, color };
    });
    const all = lines.flatMap(l => l.pts.map(q => q.v));
    const vMax = Math.max(1, ...all) * 1.1;
    const y = v => y0 + panelH - v / vMax * panelH;
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${esc(p.name)}</text>`);
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panelH}" fill="none" stroke="#bbb"/>`);
    for (const frac of [ 0, 0.5, 1 ]) {
      const v = vMax * frac;
      out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`);
      out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v >= 100 ? Math.round(v) : v.toFixed(1)}</text>`);
    }
    for (const l of lines) {
      if (!l.pts.length) continue;
      const d = l.pts.map(q => `${x(q.t).toFixed(1)},${y(q.v).toFixed(1)}`).join(' ');
      out.push(`<polyline fill="none" stroke="${l.color}" stroke-width="1.2" points="${d}"/>`);
    }
  });
  // the events, one row per kind
  const ys = top + panels.length * (panelH + gap) - gap + 16;
  KINDS.forEach(([ kind, name ], r) => {
    const yy = ys + r * 14;
    out.push(`<text x="${left - 6}" y="${yy + 9}" text-anchor="end" fill="${COLORS[kind]}">${esc(name)}</text>`);
    for (const e of events) {
      if (e.kind !== kind) continue;
      const xx = x(e.t).toFixed(1);
      out.push(`<line x1="${xx}" x2="${xx}" y1="${yy}" y2="${yy + 10}" stroke="${COLORS[kind]}"/>`);
    }
  });
  const ya = ys + stripH + 6;
  for (let i = 0; i <= 10; i++) {
    const t = tMax * i / 10;
    out.push(`<text x="${x(t).toFixed(1)}" y="${ya + 10}" text-anchor="middle" fill="#555">${fmtT(t)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

module.exports = { KINDS, table, drift, svg };
