export * from './tensor';
export * from './network';
export * from './ops';
export * from './module';
export * from './rope';
