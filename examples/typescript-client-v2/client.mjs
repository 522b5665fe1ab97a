#!/usr/bin/env node
// The MCP TypeScript SDK v2 client (@modelcontextprotocol/client) speaking
// MCP 2026-07-28 to crm-mcp, through the SDK's own OAuth client: discovery
// from the 401, Dynamic Client Registration, PKCE, the RFC 8707 resource
// and RFC 9207's iss, checked by the SDK. The only thing done by hand is
// what a person does in a browser: following the authorization URL.
// `crm-mcp dev` skips its login page for `login_hint=<user>`, so a fetch
// with `redirect: "manual"` gets the callback URL straight from Location.
//
// Usage: node client.mjs <mcp-url> [user]
//
// It signs in as user (default alice), then makes a plain call, a call
// that needs a Duo Push, and another with other arguments. Whoever runs it
// answers the pushes (the tests script the first approved and the second
// denied). Output: one JSON object per line on stdout, one per step, then
// {"scenario":"current-revision","ok":...}. Tokens, codes and verifiers
// are never printed.

import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';

const url = process.argv[2] ?? process.env.MCP_URL;
const user = process.argv[3] ?? 'alice';
// Nothing listens here: the callback URL is read from Location first.
const redirectUri = 'http://127.0.0.1:33419/callback';
const CALL_TIMEOUT_MS = 45_000;

if (!url) {
  console.error('usage: node client.mjs <mcp-url> [user]');
  process.exit(2);
}
const mcpUrl = new URL(url);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// The MCP headers of every POST to the endpoint and of its answer.
const posts = [];
async function observedFetch(input, init = {}) {
  const u = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const res = await fetch(input, init);
  if (u.pathname === mcpUrl.pathname && (init.method ?? 'GET') === 'POST') {
    const h = new Headers(init.headers);
    posts.push({
      status: res.status,
      method: h.get('mcp-method'),
      name: h.get('mcp-name'),
      version: h.get('mcp-protocol-version'),
      session_sent: h.get('mcp-session-id'),
      session_got: res.headers.get('mcp-session-id'),
    });
  }
  return res;
}

// HeadlessProvider is the SDK's OAuthClientProvider, in memory, for one
// user. Its "browser" keeps the whole callback URL for finishAuth.
class HeadlessProvider {
  constructor(user) {
    this.user = user;
    this.callback = undefined;
  }
  get redirectUrl() {
    return redirectUri;
  }
  get clientMetadata() {
    return {
      client_name: `crm-mcp typescript-client-v2 example (${this.user})`,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none', // a public client: PKCE, no secret
      application_type: 'native',
    };
  }
  state() {
    this._state = crypto.randomUUID();
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  // Kept beside the verifier, so that the SDK can check that the code
  // comes back from the authorization server it sent the user to
  // (SEP-2352; without these it warns that it cannot).
  saveDiscoveryState(state) {
    this._discovery = state;
  }
  discoveryState() {
    return this._discovery;
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    return this._verifier;
  }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
  }
  async redirectToAuthorization(authorizationUrl) {
    const u = new URL(authorizationUrl);
    u.searchParams.set('login_hint', this.user);
    const res = await fetch(u, { redirect: 'manual', signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel();
    const location = res.headers.get('location');
    if (res.status < 300 || res.status > 399 || !location) {
      throw new Error(`authorization endpoint answered ${res.status} without a redirect`);
    }
    const back = new URL(location, u);
    // The SDK checks iss, not state: that is the application's to do.
    if (back.searchParams.get('state') !== this._state) throw new Error('authorization response state does not match');
    this.callback = back;
  }
}

// [docs:typescript-v2-connect]
// versionNegotiation: without it the v2 client speaks the 2025 revisions
// only. 'auto' asks server/discover first and speaks 2026-07-28 when the
// server lists it.
function newClient() {
  return new Client({ name: 'my-agent', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
}

async function connect(provider) {
  let client = newClient();
  let transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: observedFetch });
  try {
    await client.connect(transport);
    return { client, transport };
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  // The browser came back to the redirect URI. Pass its whole query:
  // crm-mcp's sign-in sends RFC 9207's iss beside code and state, and the
  // SDK refuses a code whose iss it was not shown.
  await transport.finishAuth(provider.callback.searchParams);
  await client.close();
  client = newClient();
  transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: observedFetch });
  await client.connect(transport);
  return { client, transport };
}
// [/docs:typescript-v2-connect]

function text(result) {
  return (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

async function step(name, fn) {
  try {
    const facts = await fn();
    emit({ step: name, ok: true, ...facts });
    return true;
  } catch (err) {
    emit({ step: name, ok: false, error: String(err?.message ?? err).slice(0, 300) });
    return false;
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

let client;
let transport;
let ok = await step('connect', async () => {
  ({ client, transport } = await connect(new HeadlessProvider(user)));
  expect(transport.protocolVersion === '2026-07-28', `negotiated ${transport.protocolVersion}, want 2026-07-28`);
  expect(!transport.sessionId, 'the server gave a session id');
  return { protocol_version: transport.protocolVersion, server: client.getServerVersion()?.name };
});

const call = (args) => client.callTool({ name: 'list_contacts', arguments: args }, { timeout: CALL_TIMEOUT_MS });

ok =
  ok &&
  (await step('plain call', async () => {
    const r = await call({});
    expect(!r.isError, `a tool error: ${text(r)}`);
    expect(text(r).includes('1 restricted contact(s) withheld'), 'the restricted contact is not withheld');
    expect(!text(r).includes('Riley'), 'the restricted contact came back');
    return {};
  }));

ok =
  ok &&
  (await step('step-up approved', async () => {
    const r = await call({ query: 'defence' });
    expect(!r.isError, `a tool error: ${text(r)}`);
    expect(text(r).includes('Riley Vance'), 'the approved call did not return the restricted contact');
    return {};
  }));

ok =
  ok &&
  (await step('step-up denied', async () => {
    // Other arguments than the approved call, which the grant covers.
    const r = await call({ query: 'defence', limit: 5 });
    expect(r.isError, 'the denied call was not a tool error');
    expect(text(r).includes('denied'), `the tool error does not say denied: ${text(r)}`);
    expect(!text(r).includes('Riley'), 'the denied call returned the restricted contact');
    return {};
  }));

ok =
  ok &&
  (await step('wire', async () => {
    const signedIn = posts.filter((p) => p.status !== 401);
    const methods = signedIn.map((p) => p.method);
    expect(methods[0] === 'server/discover', `first method ${methods[0]}, want server/discover`);
    expect(!methods.includes('initialize'), 'an initialize was sent');
    for (const p of signedIn) {
      expect(p.version === '2026-07-28', `${p.method}: MCP-Protocol-Version ${p.version}`);
      expect(!p.session_sent && !p.session_got, `${p.method}: an Mcp-Session-Id`);
      if (p.method === 'tools/call') expect(p.name === 'list_contacts', `tools/call: Mcp-Name ${p.name}`);
    }
    return { methods };
  }));

await client?.close().catch(() => {});
emit({ scenario: 'current-revision', ok });
process.exit(ok ? 0 : 1);
