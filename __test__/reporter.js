'use strict';

// The spec reporter, plus one closing line in the plain "N passed, N failed" form that CI
// reads to tell how many tests ran.
const Mocha = require('mocha');

class Reporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const { passes, failures, pending } = this.stats;
      const skipped = pending ? `, ${pending} skipped` : '';
      console.log(`mocha: ${passes} passed, ${failures} failed${skipped}`);
    });
  }
}

module.exports = Reporter;
