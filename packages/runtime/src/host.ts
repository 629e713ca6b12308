import { loadNative } from '@kiln/native';

/** The engine target this machine runs best, as an engine's config.json records it. */
export interface HostTarget {
  backend: 'cpu';
  isa: 'avx2' | 'generic';
}

/** The target an engine built here by default is for (engines of other targets are refused on load). */
export function hostTarget(): HostTarget {
  return { backend: 'cpu', isa: loadNative().cpuInfo().isa };
}
