'use strict';

// egg-cluster-rs's egg 3 agent worker (lib/agent_worker.js), started from this path so that the stop
// command of every egg-scripts / @eggjs/scripts version finds it: see lib/workers/README.md.
require('../../../../../../../../../../../../agent_worker');
