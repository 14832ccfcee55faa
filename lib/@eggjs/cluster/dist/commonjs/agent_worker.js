'use strict';

// egg-cluster-rs's agent worker, started from this path when the master was started by
// @eggjs/scripts, whose `stop` looks for `@eggjs/cluster/dist/(commonjs|esm)/agent_worker.js`.
require('../../../../agent_worker');
