'use strict';

module.exports = appInfo => {
  return {
    keys: `${appInfo.name}_egg-cluster-rs-example`,
  };
};
