'use strict';

// egg-cluster-rs's egg 4 agent worker (it loads ESM apps too), started from this path so that
// @eggjs/scripts' `stop`, which looks for leftover workers whose command line has
// `@eggjs/cluster/dist/(commonjs|esm)/agent_worker.js`, finds ours.
require('../../../../egg4/agent_worker');
