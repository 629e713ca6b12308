export { KilnServer, startServer, DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_SHUTDOWN_GRACE_MS } from './server';
export type { CloseOptions, ListenOptions, ServerOptions, StartServerOptions } from './server';
export { ChatTemplate, loadChatTemplate } from './chat-template';
export type { ChatMessage } from './chat-template';
export { ApiError } from './errors';
export { ServerMetrics } from './metrics';
