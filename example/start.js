'use strict';

// `npm start` at the repo root: the example app in cluster mode on port 7001.
// `framework` is left out: egg is found through baseDir/node_modules, the cwd's
// node_modules or by walking up from egg-cluster-rs's own directory (egg is a
// devDependency of the repo).
const { startCluster } = require('..');

startCluster({
  baseDir: __dirname,
  workers: Number(process.env.EGG_WORKERS) || 2,
  port: Number(process.env.PORT) || 7001,
}).then(({ address }) => {
  console.log('[example] ready on %s (GET / and /pid), Ctrl-C to stop', address);
});
