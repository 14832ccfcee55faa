'use strict';

/**
 * A master started with `node -e "require('egg-cluster-rs').startCluster(...)"` (or `-p`) has the
 * launcher's code in its execArgv: a worker started with that execArgv runs the launcher again
 * instead of its worker file (a second master in every worker, and an app that never listens).
 * `child_process.fork` drops an `-e <code>` pair, but only when it is given `process.execArgv`
 * itself and the code follows `-e`/`-p` as a separate element; cluster's fork copies execArgv
 * first, so egg-cluster's and @eggjs/cluster's app workers inherit it whole.
 *
 * The forms Node accepts: `-e CODE`, `--eval CODE`, `--eval=CODE`, `-p CODE`, `--print CODE`,
 * `-pe CODE`, `-p -e CODE`, and `--print=X` (the print switch, its code in the next element).
 * An option's value always follows it in execArgv, so after `-p`/`--print` the next element is
 * the code unless it is another option.
 * @param {string[]} execArgv - a process's execArgv
 * @return {string[]} execArgv without the eval and print flags and their code
 */
function withoutEval(execArgv) {
  const out = [];
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i];
    if (arg === '-e' || arg === '--eval' || arg === '-pe') {
      i++;
    } else if (arg === '-p' || arg === '--print' || arg.startsWith('--print=')) {
      if (i + 1 < execArgv.length && !execArgv[i + 1].startsWith('-')) i++;
    } else if (!arg.startsWith('--eval=')) {
      out.push(arg);
    }
  }
  return out;
}

/**
 * Where the forks cannot be given an execArgv of ours (the JS masters of lib/fallback.js fork
 * with `process.execArgv`): take the eval flags out of this process's own execArgv, in place.
 * Nothing in a master reads them afterwards; its command line (/proc, `ps`) is unchanged.
 */
function dropEvalFromProcess() {
  const kept = withoutEval(process.execArgv);
  if (kept.length !== process.execArgv.length) process.execArgv.splice(0, process.execArgv.length, ...kept);
}

module.exports = { withoutEval, dropEvalFromProcess };
