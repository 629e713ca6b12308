export { KilnServer, startServer, DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_SHUTDOWN_GRACE_MS } from './server';
export type { CloseOptions, ListenOptions, ServerOptions, StartServerOptions } from './server';
// Moved to @kiln/chat (shared with the runtime's ChatSession); re-exported for existing callers.
export { ChatTemplate, loadChatTemplate } from '@kiln/chat';
export type { ChatMessage } from '@kiln/chat';
export { ApiError } from './errors';
export { ServerMetrics } from './metrics';
