#!/usr/bin/env node
// Drives crm-mcp's demo flow headless through the official MCP TypeScript
// SDK, using the SDK's own OAuth client (discovery from the 401, Dynamic
// Client Registration, PKCE S256, RFC 8707 resource indicator, token
// exchange and refresh). The only thing done by hand is the part a human
// would do in a browser: following the authorization URL. `crm-mcp dev`
// skips its login page and consent for `login_hint=<user>`, so a fetch with
// `redirect: "manual"` gets the authorization code straight from Location.
//
// Usage: node client.mjs <mcp-url> [scenario]
//    or: MCP_URL=<mcp-url> SCENARIO=demo node client.mjs
//
// Output: one JSON object per line on stdout, one per step, then a final
// {"scenario":...,"ok":true|false}. Exit status 0 only if every expectation
// held. Tokens, codes and verifiers are never printed: only their lengths
// or booleans.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { readFileSync } from 'node:fs';

// The SDK version actually installed (package.json pins it exactly).
const SDK_VERSION = JSON.parse(readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8')).version;

const url = process.argv[2] ?? process.env.MCP_URL;
const scenario = process.argv[3] ?? process.env.SCENARIO ?? 'demo';
// Nothing listens on the redirect URI: the code is read from the Location
// header before any browser would follow it. It only has to be a loopback
// URI the authorization server accepts at registration.
const redirectUri = process.env.REDIRECT_URI ?? 'http://127.0.0.1:33418/callback';

// How long to wait for the server to show a push in its push API.
const PUSH_APPEAR_MS = 20_000;
// Per-request timeout for tool calls (a push-gated call waits for the
// decision, which we make within PUSH_APPEAR_MS).
const CALL_TIMEOUT_MS = 45_000;

if (!url) {
  console.error('usage: node client.mjs <mcp-url> [scenario]   (or MCP_URL=... SCENARIO=...)');
  process.exit(2);
}
const mcpUrl = new URL(url);
// The push and scope-admin JSON APIs of `crm-mcp dev` live on the MCP host.
const origin = mcpUrl.origin;

// ---------------------------------------------------------------- output

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

class ExpectationError extends Error {}

function expect(cond, message) {
  if (!cond) throw new ExpectationError(message);
}

// describeError keeps what the SDK tells the application about a failure:
// the class, the HTTP status it carries (StreamableHTTPError.code) and the
// message. Messages are clipped: they can quote a response body.
function describeError(err) {
  if (!(err instanceof Error)) return { type: typeof err, message: String(err) };
  const out = { type: err.constructor?.name ?? 'Error', message: err.message.slice(0, 300) };
  if (err.code !== undefined) out.code = err.code;
  if (err.cause) out.cause = String(err.cause.message ?? err.cause).slice(0, 200);
  return out;
}

// ------------------------------------------------------- HTTP observation

// observedFetch is handed to the transport as its `fetch`; the SDK uses it
// for MCP requests and for its OAuth requests alike. It only records what
// went over the wire (method, path, status, challenges, grant types) so
// the report can say what the SDK did; it changes nothing. Never records
// headers other than WWW-Authenticate, nor bodies beyond the grant type and
// the JSON-RPC method / tool name.
const wire = [];

function observedFetch(input, init = {}) {
  const u = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const entry = { method: init.method ?? 'GET', path: u.pathname };
  if (typeof init.body === 'string' && init.body.startsWith('{')) {
    try {
      const msg = JSON.parse(init.body);
      if (msg.method) entry.rpc = msg.method;
      if (msg.method === 'tools/call') entry.tool = msg.params?.name;
    } catch {
      // not JSON-RPC: nothing to note
    }
  } else if (init.body instanceof URLSearchParams || typeof init.body === 'string') {
    const grant = new URLSearchParams(init.body).get('grant_type');
    if (grant) entry.grant_type = grant;
  }
  wire.push(entry);
  return fetch(input, init).then((res) => {
    entry.status = res.status;
    const challenge = res.headers.get('www-authenticate');
    if (challenge && (res.status === 401 || res.status === 403)) entry.challenge = challenge;
    return res;
  });
}

// wireSince returns the wire entries after mark, for one step's report.
function wireSince(mark) {
  return wire.slice(mark).map((e) => {
    const s = [e.method, e.path];
    if (e.rpc) s.push(e.tool ? `${e.rpc}:${e.tool}` : e.rpc);
    if (e.grant_type) s.push(`grant_type=${e.grant_type}`);
    if (e.browser) s.push('(headless browser, login_hint)');
    s.push(`-> ${e.status ?? 'pending'}`);
    return s.join(' ');
  });
}

function lastChallenge(mark, status) {
  return wire.slice(mark).reverse().find((e) => e.status === status && e.challenge)?.challenge;
}

// -------------------------------------------------------- OAuth provider

// HeadlessProvider implements the SDK's OAuthClientProvider
// (client/auth.d.ts) in memory for one user: one "session" in the SDK's
// sense, so each user gets a fresh provider and so a fresh DCR client.
class HeadlessProvider {
  constructor(user) {
    this.user = user;
    this._clientInformation = undefined;
    this._tokens = undefined;
    this._codeVerifier = undefined;
    this._state = undefined;
    this._issuer = undefined;
    this._pendingCode = undefined;
    // What happened, for the report (no secrets).
    this.registrations = 0;
    this.authorizations = []; // scope and resource the SDK put in each authorization URL
    this.tokenSaves = []; // scope granted and refresh-token presence per saveTokens
  }

  get redirectUrl() {
    return redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: `crm-mcp typescript-client example (${this.user})`,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // A public client: PKCE instead of a secret, as a CLI or desktop app.
      token_endpoint_auth_method: 'none',
    };
  }

  // A per-authorization state, checked when the code comes back (the SDK
  // sends it but leaves checking the redirect to the application).
  state() {
    this._state = crypto.randomUUID();
    return this._state;
  }

  clientInformation() {
    return this._clientInformation;
  }

  // Stored unchanged, `issuer` stamp included, as the interface asks.
  saveClientInformation(info) {
    if (!this._clientInformation || this._clientInformation.client_id !== info.client_id) this.registrations++;
    this._clientInformation = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.tokenSaves.push({
      scope: tokens.scope,
      token_type: tokens.token_type,
      access_token_len: tokens.access_token?.length ?? 0,
      has_refresh_token: Boolean(tokens.refresh_token),
      expires_in: tokens.expires_in,
    });
  }

  saveCodeVerifier(verifier) {
    this._codeVerifier = verifier;
  }

  codeVerifier() {
    if (!this._codeVerifier) throw new Error('no PKCE code verifier saved');
    return this._codeVerifier;
  }

  // Only used to learn the issuer the SDK discovered, so the `iss` on the
  // redirect (RFC 9207) can be checked against it. discoveryState() is
  // deliberately not implemented: every auth() call discovers afresh.
  saveDiscoveryState(state) {
    this._issuer = state.authorizationServerMetadata?.issuer;
  }

  // Called by the SDK when a credential is known bad (invalid_client,
  // invalid_grant, ...): forget it so its retry starts clean.
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._clientInformation = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._codeVerifier = undefined;
  }

  // The "browser": add login_hint (dev mode then skips login and consent),
  // fetch the authorization URL without following the redirect, and keep
  // the code from Location for finishAuth(). Errors here propagate out of
  // the SDK's auth() to the caller of connect()/callTool().
  async redirectToAuthorization(authorizationUrl) {
    const u = new URL(authorizationUrl);
    this.authorizations.push({
      scope: u.searchParams.get('scope'),
      resource: u.searchParams.get('resource'),
      code_challenge_method: u.searchParams.get('code_challenge_method'),
      has_state: u.searchParams.has('state'),
    });
    u.searchParams.set('login_hint', this.user);
    const entry = { method: 'GET', path: u.pathname, browser: true };
    wire.push(entry);
    const res = await fetch(u, { redirect: 'manual', signal: AbortSignal.timeout(10_000) });
    entry.status = res.status;
    await res.body?.cancel();
    const location = res.headers.get('location');
    if (res.status < 300 || res.status > 399 || !location) {
      throw new Error(`authorization endpoint answered ${res.status} without a redirect (login_hint=${this.user})`);
    }
    const back = new URL(location, u);
    if (`${back.origin}${back.pathname}` !== redirectUri) {
      throw new Error(`authorization redirected to ${back.origin}${back.pathname}, not the redirect URI`);
    }
    if (back.searchParams.get('error')) {
      throw new Error(`authorization refused: ${back.searchParams.get('error')}: ${back.searchParams.get('error_description') ?? ''}`);
    }
    if (back.searchParams.get('state') !== this._state) throw new Error('authorization response state does not match');
    const iss = back.searchParams.get('iss');
    if (iss && this._issuer && iss !== this._issuer) throw new Error(`authorization response iss ${iss} is not the discovered issuer ${this._issuer}`);
    const code = back.searchParams.get('code');
    if (!code) throw new Error('authorization response has no code');
    this._pendingCode = code;
    this.authorizations.at(-1).iss_checked = Boolean(iss && this._issuer);
  }

  takeAuthorizationCode() {
    const code = this._pendingCode;
    this._pendingCode = undefined;
    if (!code) throw new Error('the SDK asked for no authorization, so there is no code');
    return code;
  }

  // See step (f): the SDK tries a refresh before a new authorization, and a
  // refresh cannot widen a grant (RFC 6749 section 6). Keeping the access
  // token but dropping the refresh token lets the SDK's own 403 handling go
  // on to an authorization request with the challenged scope.
  forgetRefreshToken() {
    if (this._tokens) {
      const { refresh_token: _dropped, ...rest } = this._tokens;
      this._tokens = rest;
    }
  }

  summary() {
    const last = this.tokenSaves.at(-1);
    return {
      user: this.user,
      client_registered: Boolean(this._clientInformation?.client_id),
      registrations: this.registrations,
      authorizations: this.authorizations.length,
      token_scope: last?.scope,
      access_token_len: last?.access_token_len ?? 0,
      has_refresh_token: last?.has_refresh_token ?? false,
    };
  }
}

// --------------------------------------------------------------- MCP glue

function newTransport(provider) {
  return new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: observedFetch });
}

function newClient() {
  return new Client({ name: 'crm-mcp-typescript-client-example', version: '0.0.0' });
}

// connect follows the SDK's documented flow: connect() runs auth() on the
// 401; when auth() had to send the user to the authorization endpoint it
// throws UnauthorizedError, the application gets the code back (here: from
// the provider's headless redirect), calls transport.finishAuth(code) and
// connects again with a new transport.
async function connect(provider) {
  let client = newClient();
  let transport = newTransport(provider);
  try {
    await client.connect(transport);
    return { client, transport, authorizedDuringConnect: false };
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    await transport.finishAuth(provider.takeAuthorizationCode());
    await client.close().catch(() => {});
  }
  client = newClient();
  transport = newTransport(provider);
  await client.connect(transport);
  return { client, transport, authorizedDuringConnect: true };
}

function resultText(result) {
  return (result.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');
}

// callTool with a bounded timeout; opts may add onprogress.
function callTool(client, name, args = {}, opts = {}) {
  return client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS, ...opts });
}

async function expectCallFails(promise) {
  try {
    const result = await promise;
    return { failed: Boolean(result.isError), result };
  } catch (err) {
    return { failed: true, error: err };
  }
}

// ------------------------------------------------------ dev-mode JSON APIs

async function devApi(method, path, { expectStatus } = {}) {
  const res = await fetch(new URL(path, origin), { method, signal: AbortSignal.timeout(10_000) });
  const body = res.status === 204 ? '' : await res.text();
  if (expectStatus !== undefined && res.status !== expectStatus) {
    throw new ExpectationError(`${method} ${path} answered ${res.status}, want ${expectStatus}: ${body.slice(0, 200)}`);
  }
  return { status: res.status, body };
}

async function listPushes() {
  const { body } = await devApi('GET', '/dev/push/api/pushes', { expectStatus: 200 });
  const pushes = JSON.parse(body);
  expect(Array.isArray(pushes), 'push API did not answer a JSON array');
  return pushes;
}

// waitForPush polls the push API until a push not in `seen` shows up for
// user, and returns it. The tool call that caused it is still waiting.
async function waitForPush(user, seen) {
  const deadline = Date.now() + PUSH_APPEAR_MS;
  while (Date.now() < deadline) {
    const fresh = (await listPushes()).filter((p) => !seen.has(p.txid) && p.user === user);
    if (fresh.length > 0) return fresh.at(-1);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new ExpectationError(`no new push for ${user} appeared in the push API within ${PUSH_APPEAR_MS} ms`);
}

async function decidePush(txid, decision) {
  await devApi('POST', `/dev/push/api/pushes/${encodeURIComponent(txid)}/${decision}`, { expectStatus: 204 });
}

async function setScope(method, user, scope) {
  await devApi(method, `/oauth2/dev/admin/api/users/${encodeURIComponent(user)}/scopes/${encodeURIComponent(scope)}`, { expectStatus: 204 });
}

// pushStep runs a push-gated call: it starts the call, waits for its push to
// appear, decides it through the API, and returns the call's outcome.
async function pushStep(client, user, tool, args, decision) {
  const seen = new Set((await listPushes()).map((p) => p.txid));
  const progress = [];
  const call = callTool(client, tool, args, {
    // Asking for progress makes the SDK send a progressToken; the server
    // reports that it is waiting for the push while the call is open.
    onprogress: (p) => progress.push(p),
    resetTimeoutOnProgress: true,
  });
  // Surface a call that fails before any push appears instead of waiting
  // out PUSH_APPEAR_MS.
  const early = call.then(
    (r) => ({ settledEarly: true, result: r }),
    (e) => ({ settledEarly: true, error: e }),
  );
  const push = await Promise.race([waitForPush(user, seen), early]);
  if (push.settledEarly) {
    throw new ExpectationError(`${tool} ended before any push appeared: ${JSON.stringify(push.error ? describeError(push.error) : resultText(push.result).slice(0, 200))}`);
  }
  // The push says what the call will do, in an action sentence.
  const want = ACTION_PREFIX[tool];
  expect(typeof push.pushinfo?.action === 'string' && push.pushinfo.action.startsWith(want),
    `push ${push.txid} shows action ${JSON.stringify(push.pushinfo?.action)}, want one starting ${JSON.stringify(want)} for ${tool}`);
  await decidePush(push.txid, decision);
  const result = await call;
  return { push, result, progress };
}

// The start of the action sentence each tool's push shows.
const ACTION_PREFIX = {
  list_contacts: 'Search contacts',
  get_contact: 'Show contact #',
  create_contact: 'Create a contact',
  update_contact: 'Update contact #',
  list_deals: 'List deals',
  create_deal: 'Create a deal of ',
  update_deal_stage: 'Move deal #',
};

// --------------------------------------------------------------- scenario

const EXPECTED_TOOLS = ['create_contact', 'create_deal', 'get_contact', 'list_contacts', 'list_deals', 'update_contact', 'update_deal_stage'];

async function demo() {
  const opened = [];
  const step = async (id, name, fn) => {
    const mark = wire.length;
    try {
      const details = (await fn()) ?? {};
      emit({ step: id, name, ok: true, ...details });
    } catch (err) {
      emit({ step: id, name, ok: false, error: describeError(err), http: wireSince(mark) });
      throw err;
    }
  };

  try {
    // (a) Connect as alice. Everything OAuth is the SDK's: it reads
    // resource_metadata and scope from the 401, discovers the authorization
    // server, registers a client, sends PKCE S256 + resource, exchanges the
    // code.
    const alice = new HeadlessProvider('alice');
    let a;
    await step('a', 'connect as alice through the SDK OAuth flow', async () => {
      const mark = wire.length;
      a = await connect(alice);
      opened.push(a.client);
      const sum = alice.summary();
      const auth = alice.authorizations[0];
      expect(a.authorizedDuringConnect, 'the SDK connected without an OAuth round trip; was the server unprotected?');
      expect(wire.slice(mark).some((e) => e.status === 401 && e.challenge), 'no 401 challenge was seen');
      expect(sum.registrations === 1, `want 1 dynamic client registration, got ${sum.registrations}`);
      expect(auth?.code_challenge_method === 'S256', 'the authorization request did not use PKCE S256');
      expect(Boolean(auth?.resource), 'the authorization request had no resource parameter');
      expect(sum.access_token_len > 0, 'no access token saved');
      return {
        ...sum,
        requested_scope: auth.scope,
        resource: auth.resource,
        iss_checked: auth.iss_checked,
        challenge: lastChallenge(mark, 401),
        server: a.client.getServerVersion()?.name,
        protocol_version: a.transport.protocolVersion,
        session: Boolean(a.transport.sessionId),
        http: wireSince(mark),
      };
    });

    // (b) tools/list.
    await step('b', 'tools/list has the 7 tools', async () => {
      const { tools } = await a.client.listTools();
      const names = tools.map((t) => t.name).sort();
      expect(JSON.stringify(names) === JSON.stringify(EXPECTED_TOOLS), `tools are ${names.join(',')}, want ${EXPECTED_TOOLS.join(',')}`);
      return { tools: names };
    });

    // (c) A plain listing leaves the restricted contact out and says so.
    await step('c', 'list_contacts withholds the restricted contact', async () => {
      const result = await callTool(a.client, 'list_contacts');
      const text = resultText(result);
      const withheld = result.structuredContent?.withheld_restricted;
      expect(!result.isError, `list_contacts failed: ${text.slice(0, 200)}`);
      expect(!JSON.stringify(result).includes('Riley'), 'Riley Vance is in a plain listing');
      expect(withheld === 1, `withheld_restricted is ${withheld}, want 1`);
      expect(/1 restricted contact\(s\) withheld/.test(text), 'the text does not say 1 restricted contact was withheld');
      return { contacts: result.structuredContent?.contacts?.length, withheld_restricted: withheld };
    });

    // (d) A search that matches the restricted contact needs Duo Push. The
    // call stays open (with progress notifications) while we approve it.
    await step('d', 'list_contacts "defence" waits for a push; approve returns Riley Vance', async () => {
      const { push, result, progress } = await pushStep(a.client, 'alice', 'list_contacts', { query: 'defence' }, 'approve');
      const text = resultText(result);
      expect(!result.isError, `approved call failed: ${text.slice(0, 200)}`);
      expect(text.includes('Riley Vance'), 'approved search does not return Riley Vance');
      expect(progress.length >= 1, 'no progress notification arrived while the call waited');
      return {
        push: { txid_len: String(push.txid).length, user: push.user, type: push.type, status: push.status, action: push.pushinfo?.action },
        progress_notifications: progress.length,
        progress_message: progress[0]?.message,
        riley: true,
      };
    });

    // (e) A different call is a different push; denying it gives a tool
    // error with nothing of the record.
    await step('e', 'get_contact 6 gets a new push; deny gives isError without Riley', async () => {
      const { push, result, progress } = await pushStep(a.client, 'alice', 'get_contact', { id: 6 }, 'deny');
      const text = resultText(result);
      expect(result.isError === true, `denied get_contact is not isError: ${text.slice(0, 200)}`);
      expect(!JSON.stringify(result).includes('Riley'), 'denied get_contact still shows Riley');
      return { push: { user: push.user, status: push.status, action: push.pushinfo?.action }, progress_notifications: progress.length, is_error: true, message: text.slice(0, 200) };
    });

    // (f) bob lacks crm.deals.read. A new provider is a new OAuth session
    // (new DCR client, login_hint=bob).
    const bob = new HeadlessProvider('bob');
    let b;
    await step('f1', 'connect as bob (new OAuth client session)', async () => {
      b = await connect(bob);
      opened.push(b.client);
      return bob.summary();
    });

    let challengedScope;
    await step('f2', 'list_deals as bob: the SDK meets 403 insufficient_scope', async () => {
      const mark = wire.length;
      const before = bob.authorizations.length;
      const { failed, error, result } = await expectCallFails(callTool(b.client, 'list_deals'));
      expect(failed, `list_deals succeeded for bob without crm.deals.read: ${result && resultText(result).slice(0, 200)}`);
      const challenge = lastChallenge(mark, 403);
      expect(challenge && /insufficient_scope/.test(challenge), 'no 403 insufficient_scope challenge was seen');
      challengedScope = /scope="([^"]*)"/.exec(challenge)?.[1];
      const http = wireSince(mark);
      return {
        sdk_error: error ? describeError(error) : { is_error_result: true, text: resultText(result).slice(0, 200) },
        challenge,
        challenged_scope: challengedScope,
        sdk_refreshed: wire.slice(mark).some((e) => e.grant_type === 'refresh_token'),
        sdk_reauthorized: bob.authorizations.length > before,
        http,
      };
    });

    await step('f3', 'grant crm.deals.read to bob (admin API)', async () => {
      await setScope('POST', 'bob', 'crm.deals.read');
      return {};
    });

    // Observation only: the same transport, after the grant. The SDK keeps
    // the last 403 challenge it tried to answer and refuses to try the
    // same one again until a request succeeds; bob's token has not changed,
    // so neither has the challenge.
    await step('f4', 'list_deals again on the same transport (observation)', async () => {
      const mark = wire.length;
      const { failed, error } = await expectCallFails(callTool(b.client, 'list_deals'));
      return { failed, sdk_error: error ? describeError(error) : undefined, http: wireSince(mark) };
    });

    // Re-authorize, letting the SDK ask for the challenged scope: a new
    // transport (fresh 403 bookkeeping) on the same provider, with the
    // refresh token dropped so that the SDK's auth() goes past the refresh
    // to a new authorization request. It throws UnauthorizedError after the
    // redirect, as on connect; finishAuth(code) and the call is repeated.
    await step('f5', 're-authorize bob with the challenged scope; list_deals succeeds', async () => {
      const mark = wire.length;
      await b.client.close();
      bob.forgetRefreshToken();
      b = await connect(bob); // the access token is still valid: no OAuth here
      opened.push(b.client);
      const before = bob.authorizations.length;
      let first;
      try {
        first = await callTool(b.client, 'list_deals');
      } catch (err) {
        expect(err instanceof UnauthorizedError, `want UnauthorizedError after the SDK's re-authorization redirect, got ${JSON.stringify(describeError(err))}`);
        await b.transport.finishAuth(bob.takeAuthorizationCode());
      }
      expect(bob.authorizations.length === before + 1, 'the SDK did not start a new authorization on the 403');
      const asked = bob.authorizations.at(-1).scope;
      const result = first ?? (await callTool(b.client, 'list_deals'));
      const text = resultText(result);
      expect(!result.isError, `list_deals failed after re-authorization: ${text.slice(0, 200)}`);
      const granted = bob.summary().token_scope ?? '';
      expect(granted.split(' ').includes('crm.deals.read'), `new token scope is "${granted}", want crm.deals.read in it`);
      return {
        sdk_requested_scope: asked,
        requested_challenged_scope: asked === challengedScope,
        token_scope: granted,
        deals: result.structuredContent?.deals?.length,
        http: wireSince(mark),
      };
    });

    // (g) Revoking the scope bites on the next call.
    await step('g', 'revoke crm.deals.read from bob; the next list_deals fails', async () => {
      await setScope('DELETE', 'bob', 'crm.deals.read');
      const mark = wire.length;
      const { failed, error, result } = await expectCallFails(callTool(b.client, 'list_deals'));
      expect(failed, `list_deals still works after revocation: ${result && resultText(result).slice(0, 120)}`);
      return {
        sdk_error: error ? describeError(error) : { is_error_result: true, text: resultText(result).slice(0, 200) },
        challenge: lastChallenge(mark, 403),
        http: wireSince(mark),
      };
    });
  } finally {
    await Promise.allSettled(opened.map((c) => c.close()));
  }
}

const scenarios = { demo };

async function main() {
  const run = scenarios[scenario];
  if (!run) {
    console.error(`unknown scenario ${JSON.stringify(scenario)}; known: ${Object.keys(scenarios).join(', ')}`);
    return 2;
  }
  emit({ start: scenario, url: mcpUrl.href, sdk: SDK_VERSION, node: process.version });
  try {
    await run();
    emit({ scenario, ok: true });
    return 0;
  } catch (err) {
    emit({ scenario, ok: false, error: describeError(err) });
    console.error(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

// Exit explicitly: an SSE stream or keep-alive socket must not keep the
// process alive after the verdict.
process.exit(await main());
