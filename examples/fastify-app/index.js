// Kiln inside an existing fastify application: the app keeps its own routes (here /api/haiku, which
// calls the model directly), and Kiln's OpenAI-compatible routes (/v1/*) are handed, raw, to a
// KilnServer's own fastify instance, so they stream, validate and count metrics exactly as `kiln serve`
// does. Both share one loaded model.
//
//   node examples/fastify-app/index.js [port]      (port 0: pick one; prints the URL)
const Fastify = require('fastify');
const { LLM } = require('@kiln/runtime');
const { KilnServer } = require('@kiln/server');

async function createApp() {
  const llm = await LLM.load(); // scribe-7m, the built-in model
  const kiln = await KilnServer.create({ llm, ownsLlm: true, modelName: 'scribe-7m', logger: false });

  const app = Fastify({ logger: false });
  // The application's own route, using the model directly.
  app.get('/api/haiku', async (request) => {
    const topic = typeof request.query.topic === 'string' ? request.query.topic : 'the sea';
    const { text } = await llm.generate(`And God spake of ${topic},`, { maxTokens: 16, temperature: 0 });
    return { topic, text };
  });
  // Kiln's routes: in their own encapsulated context, the body is left unread (no parser consumes it),
  // and the raw request and response go to Kiln's router.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (request, payload, done) => done(null));
    scope.all('/v1/*', (request, reply) => {
      reply.hijack();
      kiln.app.routing(request.raw, reply.raw);
    });
  });
  app.addHook('onClose', () => kiln.close());
  return app;
}

async function main() {
  const app = await createApp();
  const url = await app.listen({ host: '127.0.0.1', port: Number(process.argv[2] ?? 0) });
  console.log(`listening on ${url}`);
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => app.close());
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
module.exports = { createApp };
