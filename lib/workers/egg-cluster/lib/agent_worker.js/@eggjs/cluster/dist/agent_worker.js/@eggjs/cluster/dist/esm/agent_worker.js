'use strict';

// egg-cluster-rs's egg 4 agent worker (lib/egg4/agent_worker.js), started from this path so that the stop
// command of every egg-scripts / @eggjs/scripts version finds it: see lib/workers/README.md.
require('../../../../../../../../../../../../egg4/agent_worker');
