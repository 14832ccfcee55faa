'use strict';

const path = require('path');
const { spawn } = require('child_process');

/**
 * Runs `node <script> ...args` to its end (egg-scripts, the CLI)
 * @param {string} script -
 * @param {string[]} args -
 * @param {Object} env -
 * @return {Promise<string>} its stdout and stderr; rejects with them when it exits non-zero
 */
function run(script, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ script, ...args ], { env, stdio: [ 'ignore', 'pipe', 'pipe' ] });
    let out = '';
    child.stdout.on('data', d => { out += d; });
    child.stderr.on('data', d => { out += d; });
    child.on('error', reject);
    child.on('close', code => (code === 0 ? resolve(out) : reject(new Error(`${path.basename(script)} ${args[0]} exited with ${code}:\n${out}`))));
  });
}

module.exports = { run };
