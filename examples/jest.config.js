module.exports = { ...require('../jest.preset.js'), maxWorkers: 1 };
