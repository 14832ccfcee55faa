'use strict';

/**
 * BENCH_NODE=<major>: run this bench script on that Node major instead of the one that started
 * it. The major is installed from the npm registry by scripts/install-nodes.sh (cached under
 * .nodes/); the script is re-run by that node with the same arguments, and every master it forks
 * uses it too (fork() takes process.execPath). Call first thing in a bench entry point.
 */
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');

module.exports = function onBenchNode() {
  const want = process.env.BENCH_NODE;
  if (!want || want === process.versions.node.split('.')[0]) return;
  if (!/^\d+$/.test(want)) {
    console.error(`BENCH_NODE should be a Node major such as 24, got ${JSON.stringify(want)}`);
    process.exit(2);
  }
  const script = path.join(__dirname, '..', '..', 'scripts', 'install-nodes.sh');
  const node = execFileSync(script, [ want ], { encoding: 'utf8', stdio: [ 'ignore', 'pipe', 'inherit' ] }).trim();
  const res = spawnSync(node, [ ...process.execArgv, process.argv[1], ...process.argv.slice(2) ], { stdio: 'inherit' });
  process.exit(res.status === null ? 1 : res.status);
};
