// End-to-end check of sessiond's ElizaOS dialect with the published client.
// SESSIOND_URL: the server; ELIZA_AGENT_ID: a configured agent; exits non-zero on a mismatch.
import { SessionsService } from '@elizaos/api-client';

const baseUrl = process.env.SESSIOND_URL;
const agentId = process.env.ELIZA_AGENT_ID;
const userId = '0b9e6d3a-1c2f-4e5a-8d7b-3c4f5a6b7c8d';
if (!baseUrl || !agentId) {
  console.error('SESSIOND_URL and ELIZA_AGENT_ID are required');
  process.exit(2);
}
const sessions = new SessionsService({ baseUrl, apiKey: process.env.SESSIOND_API_KEY });

function check(condition, what, value) {
  if (!condition) {
    console.error(`mismatch: ${what}: ${JSON.stringify(value)}`);
    process.exit(1);
  }
}

const health = await sessions.checkHealth();
check(health.status === 'healthy', 'health.status', health);

const created = await sessions.createSession({ agentId, userId, metadata: { via: 'e2e' } });
check(typeof created.sessionId === 'string' && created.agentId === agentId, 'createSession', created);
const sessionId = created.sessionId;

const sync = await sessions.sendMessageSync(sessionId, { content: 'sync hello' });
check(sync && sync.agentResponse && sync.agentResponse.text === 'sync hello', 'sendMessageSync', sync);
check(sync.userMessage.content === 'sync hello', 'sendMessageSync.userMessage', sync);

const sent = await sessions.sendMessage(sessionId, { content: 'default hello' });
check(sent && sent.userMessage && sent.userMessage.content === 'default hello', 'sendMessage', sent);
check(sent.sessionStatus && typeof sent.sessionStatus.expiresAt === 'string', 'sessionStatus', sent);

for (let i = 0; i < 5; i += 1) {
  await sessions.sendMessageSync(sessionId, { content: `m${i}` });
}
// the default (websocket) send's reply arrives in the background: wait for all 14
let total = 0;
for (let attempt = 0; attempt < 200 && total !== 14; attempt += 1) {
  total = (await sessions.getMessages(sessionId, { limit: 100 })).messages.length;
}
check(total === 14, 'message count', total);

const seen = [];
let before;
for (let page = 0; page < 50; page += 1) {
  const result = await sessions.getMessages(sessionId, { limit: 3, before });
  check(result.messages.length >= 1 && result.messages.length <= 3, 'page size', result);
  seen.push(...result.messages.map((m) => m.id));
  if (!result.hasMore) break;
  before = new Date(result.messages[result.messages.length - 1].createdAt);
}
check(seen.length === 14 && new Set(seen).size === 14, 'paged every message once', seen);

const got = await sessions.getSession(sessionId);
check(got.sessionId === sessionId && got.renewalCount >= 1, 'getSession', got);

const listed = await sessions.listSessions();
check(listed.sessions.some((s) => s.sessionId === sessionId), 'listSessions', listed);
check(listed.total === listed.sessions.length, 'listSessions.total', listed);

const deleted = await sessions.deleteSession(sessionId);
check(deleted && deleted.success === true, 'deleteSession', deleted);

try {
  await sessions.getSession(sessionId);
  check(false, 'getSession after delete', 'resolved');
} catch (error) {
  check(error.code === 'SESSION_NOT_FOUND' && error.status === 404, 'ApiError after delete', error);
}
console.log('ok');
