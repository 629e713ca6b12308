export * from './types';
export * from './registry';
import './llama';
