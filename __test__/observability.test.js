'use strict';

// Seeing inside the cluster (docs/observability.md): the app's own prom-client metrics merged
// over the workers in the master's /metrics, the workers' request metrics carried by their
// heartbeats, `egg-cluster-rs top` read through a real pseudo-terminal, and the Grafana
// dashboard checked against a real scrape. Scrapes are parsed by prometheus_client's strict
// OpenMetrics parser and the screens by pyte (a VT100 emulator), both from PyPI, installed on
// first use into node_modules/.cache (see pythonDeps()).

const assert = require('assert');
const fs = require('fs');
const http = require('http');
const path = require('path');
const childProcess = require('child_process');
const { ROOT, startMaster, getFreePort, get, waitUntil } = require('./helper');
const { hit, Load } = require('./load');

const CLI = path.join(ROOT, 'bin/egg-cluster-rs.js');
const PY = path.join(__dirname, 'fixtures/py');
const PROD = { EGG_SERVER_ENV: 'prod' };
const EGG4 = path.join(ROOT, 'node_modules/egg4');
const DASHBOARD = path.join(ROOT, 'docs/grafana-dashboard.json');

let pyPath = null;
/**
 * prometheus_client and pyte for python3, from PyPI into node_modules/.cache once.
 * @return {string} the PYTHONPATH to use
 */
function pythonDeps() {
  if (pyPath) return pyPath;
  const dir = path.join(ROOT, 'node_modules/.cache/egg-cluster-rs-py');
  const env = { ...process.env, PYTHONPATH: dir };
  const has = () => childProcess.spawnSync('python3', [ '-c', 'import prometheus_client, pyte' ], { env }).status === 0;
  if (!has()) {
    const r = childProcess.spawnSync('python3', [ '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
      '--target', dir, 'prometheus_client==0.26.0', 'pyte==0.8.2' ], { encoding: 'utf8', timeout: 180000 });
    assert(has(), `cannot install prometheus_client and pyte from PyPI into ${dir}: ${r.stderr || r.error}`);
  }
  pyPath = dir;
  return dir;
}

/**
 * Scrapes the master's /metrics and parses it with prometheus_client's OpenMetrics parser
 * @param {number} port - the metrics port
 * @param {string} [query] -
 * @return {Promise<{text: string, samples: Object[]}>} -
 */
async function scrape(port, query = '') {
  const res = await get(port, `/metrics${query}`, { timeout: 20000 });
  assert.strictEqual(res.status, 200, res.body);
  assert.match(res.headers['content-type'], /^application\/openmetrics-text; version=1\.0\.0/);
  const parsed = childProcess.spawnSync('python3', [ path.join(PY, 'parse_metrics.py') ], {
    input: res.body, encoding: 'utf8', env: { ...process.env, PYTHONPATH: pythonDeps() },
  });
  assert.strictEqual(parsed.status, 0, `the OpenMetrics parser refused the scrape: ${parsed.stderr}\n${res.body}`);
  return { text: res.body, samples: JSON.parse(parsed.stdout) };
}

/** the sum of the samples named `name` whose labels include `labels` */
function total(scraped, name, labels = {}) {
  return scraped.samples
    .filter(s => s.name === name && Object.entries(labels).every(([ k, v ]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

function series(scraped, name) {
  return scraped.samples.filter(s => s.name === name);
}

/**
 * `count` GETs of /pid: 4 clients on keep-alive connections and 4 on new ones
 * @param {number} port -
 * @param {number} count -
 * @return {Promise<Set<number>>} the workers that answered
 */
async function requests(port, count) {
  const pids = new Set();
  const clients = 8;
  await Promise.all(Array.from({ length: clients }, async (_, i) => {
    const agent = i < clients / 2 ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    for (let n = i; n < count; n += clients) {
      const r = await hit(port, agent);
      assert(!r.error, `GET /pid: ${r.error}`);
      pids.add(r.pid);
    }
    if (agent) agent.destroy();
  }));
  return pids;
}

/**
 * Runs the CLI in an 80x24 pseudo-terminal (fixtures/py/screen.py): the screen once `waitFor`
 * shows, then `keys` typed, then the exit code. Asynchronous: the test's own load goes on.
 * @return {Promise<{screen: string, code: ?number, after: string}>} -
 */
function terminal(args, waitFor, keys = '') {
  const child = childProcess.spawn('python3', [ path.join(PY, 'screen.py'), waitFor, keys, '--', process.execPath, CLI, ...args ], {
    env: { ...process.env, PYTHONPATH: pythonDeps() }, stdio: [ 'ignore', 'pipe', 'pipe' ],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', d => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('error', reject);
    child.on('close', status => {
      clearTimeout(timer);
      if (status !== 0) return reject(new Error(`screen.py exited ${status}: ${stderr}`));
      const [ screen, rest ] = stdout.split(`${'='.repeat(80)}\n`);
      const [ exitLine, ...after ] = rest.split('\n');
      resolve({ screen, code: exitLine === 'exit None' ? null : Number(exitLine.slice(5)), after: after.join('\n') });
    });
  });
}

describe('observability', () => {
  before(() => pythonDeps());

  it('egg 3, processes: 400 requests scrape as 400 (app counter, request counter, histogram); top; the dashboard; a hung worker is left out', async function() {
    this.timeout(240000);
    const metricsPort = await getFreePort();
    const m = await startMaster('prom', { metrics: { port: metricsPort } }, { env: PROD });
    await m.waitReady();
    const port = m.options.port;

    // 1. 400 requests over the 2 workers
    const served = await requests(port, 400);
    assert.strictEqual(served.size, 2, `both workers served: ${[ ...served ]}`);
    // the workers' figures ride their next heartbeat (each second); a scrape that a worker did
    // not answer in time (a machine starved of CPU) lacks its app metrics: the next one has them
    let s = await waitUntil(async () => {
      const x = await scrape(metricsPort);
      return total(x, 'egg_cluster_http_requests_total') === 400 && total(x, 'app_requests_total') === 400 &&
        total(x, 'agent_tasks') === 3 && x;
    }, 30000, 'the request counts of both workers, and the app metrics of all three children, in one scrape');
    // the app's own prom-client metrics, summed over the workers
    assert.strictEqual(total(s, 'app_requests_total', { route: '/pid' }), 400, s.text);
    assert.strictEqual(series(s, 'app_requests_total').length, 1, 'merged: one series');
    assert.strictEqual(total(s, 'app_request_seconds_count', { route: '/pid' }), 400);
    assert.strictEqual(total(s, 'app_request_seconds_bucket', { route: '/pid', le: '+Inf' }), 400);
    // ... from a registry the app named, and the agent's
    assert.strictEqual(total(s, 'app_jobs_total'), 400);
    assert.strictEqual(total(s, 'agent_tasks'), 3);
    // aggregators: max of the workers' 1s; prom-client's default metrics, `omit` left out
    assert.strictEqual(total(s, 'app_worker_up'), 1);
    assert(series(s, 'nodejs_heap_size_used_bytes').length === 1, 'prom-client default metrics');
    assert.strictEqual(series(s, 'process_start_time_seconds').length, 0, 'omit');
    // the built-in request metrics
    assert.strictEqual(total(s, 'egg_cluster_http_requests_total', { code: '2xx' }), 400);
    assert.strictEqual(total(s, 'egg_cluster_http_request_duration_seconds_count'), 400);
    assert.strictEqual(total(s, 'egg_cluster_http_request_duration_seconds_bucket', { le: '+Inf' }), 400);
    assert.strictEqual(total(s, 'egg_cluster_http_requests_in_flight'), 0);
    const apps = series(s, 'egg_cluster_http_request_duration_seconds_count').map(x => x.labels.id).sort();
    assert.strictEqual(apps.length, 2);
    for (const id of apps) {
      assert(total(s, 'egg_cluster_http_request_duration_seconds_count', { id }) > 0, `worker ${id} counted`);
      assert(total(s, 'egg_cluster_heap_used_bytes', { role: 'app', id }) > 1e6);
      const elu = total(s, 'egg_cluster_event_loop_utilization', { role: 'app', id });
      assert(elu >= 0 && elu <= 1, `elu ${elu}`);
    }
    assert(total(s, 'egg_cluster_heap_total_bytes', { role: 'agent' }) > 1e6, 'the agent has runtime figures');
    assert.strictEqual(series(s, 'egg_cluster_http_requests_in_flight').filter(x => x.labels.role === 'agent').length, 0);

    // 2. by process: each worker's own series under role/id, adding up to the merge
    const byProcess = await waitUntil(async () => {
      const x = await scrape(metricsPort, '?by=process');
      return series(x, 'app_requests_total').length === 2 && x;
    }, 30000, 'both workers\' app metrics by process');
    const perWorker = series(byProcess, 'app_requests_total');
    assert.deepStrictEqual(perWorker.map(x => x.labels.role), [ 'app', 'app' ]);
    assert.deepStrictEqual(perWorker.map(x => x.labels.id).sort(), apps);
    assert.strictEqual(perWorker.reduce((a, x) => a + x.value, 0), 400);
    for (const x of perWorker) {
      assert.strictEqual(x.value, total(byProcess, 'egg_cluster_http_request_duration_seconds_count', { id: x.labels.id }));
    }
    assert.strictEqual(series(byProcess, 'process_start_time_seconds').length, 2, 'by process, omit too (the workers collect default metrics)');

    // 3. a 404: its own status class
    assert.strictEqual((await get(port, '/missing')).status, 404);
    s = await waitUntil(async () => {
      const x = await scrape(metricsPort);
      return total(x, 'egg_cluster_http_requests_total', { code: '4xx' }) === 1 && x;
    }, 20000, 'the 404 counted');
    assert.strictEqual(total(s, 'egg_cluster_http_requests_total'), 401);

    // 4. every metric the dashboard queries is in a real scrape
    const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
    const exprs = [];
    const walk = panels => panels.forEach(p => {
      (p.targets || []).forEach(t => exprs.push(t.expr));
      walk(p.panels || []);
    });
    walk(dashboard.panels);
    exprs.push(dashboard.templating.list[0].definition);
    const names = new Set(exprs.join(' ').match(/\begg_cluster_[a-z_]+/g));
    assert(names.size >= 20, [ ...names ].join());
    const scraped = new Set(s.samples.map(x => x.name));
    for (const name of names) assert(scraped.has(name), `the dashboard queries ${name}, which no scrape has`);
    assert(dashboard.__inputs[0].pluginId === 'prometheus');

    // 5. top --once: one frame with the agent and both workers
    const once = await terminal([ 'top', '--once', `--pid=${m.pid}` ], 'q quit');
    assert.strictEqual(once.code, 0, once.screen);
    const lines = once.screen.split('\n');
    assert.match(lines[0], new RegExp(`^top - master ${m.pid} ready, up \\d+\\w, 2/2 serving, healthy`));
    assert.match(once.screen, /^WORKER\s+PID STATE\s+UP RST CPU%\s+RSS HEAP ELU%\s+LAG REQ\/S\s+P50\s+P99 INFL$/m);
    const agentRow = lines.find(l => l.startsWith('agent#'));
    assert.match(agentRow, /^agent#\d+\s+\d+ serving\s+\d+\w\s+0 /);
    const appRows = lines.filter(l => l.startsWith('app#'));
    assert.strictEqual(appRows.length, 2, once.screen);
    for (const row of appRows) {
      // serving, restarts 0, figures for CPU, RSS, heap, ELU and lag; no requests this second
      assert.match(row, /^app#\d+\s+\d+ serving\s+\d+\w\s+0\s+[\d.]+\s+\d+M\s+\d+M\s+\d+\s+\d+\s+0\s+-\s+-\s+0$/, row);
    }
    assert(lines.every(l => l.length <= 80));

    // 6. the live view, under requests: figures per worker; q quits
    const load = new Load(port, { keepAlive: 2, close: 0 });
    // a frame with a request rate: the second one on
    const live = await terminal([ 'top', `--pid=${m.pid}` ], '^requests [1-9]', 'q');
    await load.stop();
    assert.strictEqual(live.code, 0, live.after);
    assert.match(live.screen, /^requests [\d.]+\/s {2}p50 [\d.]+ms {2}p99 [\d.]+ms/m, live.screen);
    const liveRows = live.screen.split('\n').filter(l => /^app#\d+\s+\d+ serving/.test(l));
    assert.strictEqual(liveRows.length, 2, live.screen);
    // the view was left: the alternate screen is gone, the shell's screen is back
    assert(!/REQ\/S/.test(live.after), live.after);

    // 7. a hung worker: the scrape does not wait for it, leaves it out and counts it
    const before = await waitUntil(async () => {
      const x = await scrape(metricsPort, '?by=process');
      return series(x, 'app_requests_total').length === 2 && x;
    }, 30000, 'both workers\' app metrics by process');
    const blocked = Number((await get(port, '/block?ms=10000')).body);
    m.send({ action: 'runner-status' });
    const blockedId = (await m.waitFor('runner-status')).data.children.find(c => c.pid === blocked).id;
    const timeouts = (x, labels) => total(x, 'egg_cluster_scrape_timeouts_total', labels);
    const during = await scrape(metricsPort, '?by=process');
    // the scrape came back while the worker was still blocked
    assert(!m.messages.some(x => x.action === 'unblocked'), 'the worker was still blocked');
    const blockedLabels = { role: 'app', id: String(blockedId) };
    assert.strictEqual(timeouts(during, blockedLabels), timeouts(before, blockedLabels) + 1);
    assert(timeouts(during, { role: 'master' }) >= timeouts(before, { role: 'master' }) + 1);
    assert.strictEqual(series(during, 'app_requests_total').filter(x => x.labels.id === String(blockedId)).length, 0);
    assert.deepStrictEqual(series(during, 'app_requests_total').map(x => x.value),
      series(before, 'app_requests_total').filter(x => x.labels.id !== String(blockedId)).map(x => x.value));
  });

  it('top: a hung, a retiring and a gone worker stay readable in 80x24, past the screen "... N more"', () => {
    const { frame } = require('../lib/top');
    const now = Date.now();
    const http = n => ({ codes: [ 0, n, 0, 0, 0, 0 ], inFlight: 1, buckets: [ 0, 0, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 ], sum: n * 0.004 });
    const child = (id, extra) => ({ role: 'app', id, pid: 1000 + id, state: 'serving', startedAt: now - 60000, restarts: 0, cpu: 5, rss: 80 << 20,
      lagMs: 2, hungSince: null, stats: { elu: 0.2, busyMs: 1, heapUsed: 20 << 20, heapTotal: 30 << 20, gcMs: 1, http: http(100) }, ...extra });
    const master = { pid: 1, phase: 'reloading', uptimeMs: 60000, serving: 2, workers: 2, healthy: false, reforks: 0, hung: 1, cpu: 1, rss: 40 << 20 };
    const before = { master, children: [ child(1), child(2), child(3) ] };
    const after = { master, children: [ child(1, { hungSince: now - 5000, stats: before.children[0].stats }), child(2, { state: 'retiring', stats: { ...before.children[1].stats, http: http(300) } }), child(4, { state: 'forked', stats: null }) ] };
    const lines = frame([ { at: now - 2000, snap: before }, { at: now, snap: after } ], { width: 80, height: 24 });
    assert(lines.length <= 24 && lines.every(l => l.length <= 80), lines.join('\n'));
    const row = id => lines.find(l => l.startsWith(`app#${id} `));
    assert.match(row(1), /^app#1\s+1001 hung\s+60s\s+0\s+5\s+80M\s+20M\s+20\s+2\s+0\s+-\s+-\s+1$/);
    // 200 requests in 2 s, all in the 2.5-5 ms bucket
    assert.match(row(2), /^app#2\s+1002 retiring\s+60s\s+0\s+5\s+80M\s+20M\s+20\s+2\s+100\s+3\.8\s+5\.0\s+1$/);
    assert.match(row(3), /^app#3\s+1003 gone\s+-\s+0\s+-/);
    assert.match(row(4), /^app#4\s+1004 forked\s+60s\s+0\s+5\s+80M\s+-\s+-/);
    assert.match(lines[0], /^top - master 1 reloading, up 60s, 2\/2 serving, UNHEALTHY {2,}\d\d:\d\d:\d\d$/);
    const many = { master, children: Array.from({ length: 30 }, (_, i) => child(i + 1)) };
    const full = frame([ { at: now, snap: many } ], { width: 80, height: 24 });
    assert.strictEqual(full.length, 24);
    assert.match(full.find(l => l.includes('more')), /^ {2}\.\.\. \d+ more$/);
  });

  it('egg 4, worker_threads: the app counter and the request counter agree', async function() {
    this.timeout(120000);
    const metricsPort = await getFreePort();
    const m = await startMaster('prom', { framework: EGG4, startMode: 'worker_threads', metrics: { port: metricsPort } }, { env: PROD });
    await m.waitReady();
    const served = await requests(m.options.port, 100);
    assert.strictEqual(served.size, 2, `both threads served: ${[ ...served ]}`);
    const s = await waitUntil(async () => {
      const x = await scrape(metricsPort);
      return total(x, 'egg_cluster_http_requests_total') === 100 && total(x, 'app_requests_total') === 100 &&
        total(x, 'agent_tasks') === 3 && x;
    }, 30000, 'the request counts of both threads, and the app metrics of all three children, in one scrape');
    assert.strictEqual(total(s, 'egg_cluster_http_request_duration_seconds_count'), 100);
    assert.strictEqual(total(s, 'agent_tasks'), 3);
    assert.strictEqual(series(s, 'egg_cluster_heap_used_bytes').length, 3, 'agent and 2 app threads');
  });

  it('sticky and reusePort: the request counter counts what the master hands over and what each slot\'s socket accepts', async function() {
    this.timeout(180000);
    for (const mode of [ { sticky: true }, { reusePort: true } ]) {
      const metricsPort = await getFreePort();
      const m = await startMaster('prom', { ...mode, metrics: { port: metricsPort } }, { env: PROD });
      await m.waitReady();
      const served = await requests(m.options.port, 100);
      assert(served.size >= 1, `${JSON.stringify(mode)}: answered`);
      const s = await waitUntil(async () => {
        const x = await scrape(metricsPort);
        return total(x, 'egg_cluster_http_requests_total') === 100 && x;
      }, 30000, `${JSON.stringify(mode)}: the 100 requests counted over the workers`);
      assert.strictEqual(total(s, 'egg_cluster_http_request_duration_seconds_count'), 100);
      assert.strictEqual(total(s, 'app_requests_total'), 100, 'the app\'s own counter agrees');
      m.kill('SIGTERM');
      assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
    }
  });
});
