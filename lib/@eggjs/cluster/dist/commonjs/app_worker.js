'use strict';

// egg-cluster-rs's app worker, started from this path when the master was started by
// @eggjs/scripts, whose `stop` looks for `@eggjs/cluster/dist/(commonjs|esm)/app_worker.js`.
require('../../../../app_worker');
