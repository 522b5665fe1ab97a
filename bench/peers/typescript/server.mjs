// The benchmark's TypeScript peer: the CRM server a user would build with
// the official MCP TypeScript SDK, as its documentation recommends. It
// serves the same seven tools as crm-mcp over in-memory data (the seed
// crm-mcp's store starts with, ../seed/seed.json), on Streamable HTTP with
// sessions (one transport and McpServer per session, as in the SDK's
// examples), behind the SDK's requireBearerAuth middleware. The verifier
// checks each token with jose against the authorization server's JWKS
// (createRemoteJWKSet caches the keys): signature, issuer, audience (the
// resource URL, RFC 8707) and expiry. Each tool checks the scope it needs.
// There is no step-up: the peer is the baseline, not a replacement.
//
//   node server.mjs --addr 127.0.0.1:9002 --issuer <issuer URL> --jwks-url <JWKS URL>
//
// It prints "typescript peer ready: <MCP URL>" on stdout once it serves.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as z from 'zod';

const { values: flags } = parseArgs({
  options: {
    addr: { type: 'string', default: '127.0.0.1:9002' },
    issuer: { type: 'string' },
    'jwks-url': { type: 'string' },
    resource: { type: 'string' },
  },
});
if (!flags.issuer || !flags['jwks-url']) {
  console.error('typescript peer: --issuer and --jwks-url are required');
  process.exit(2);
}
const [host, port] = splitHostPort(flags.addr);
const resource = flags.resource ?? `http://${flags.addr}/mcp`;
const issuer = flags.issuer;

const scopes = {
  contactsRead: 'crm.contacts.read',
  contactsWrite: 'crm.contacts.write',
  dealsRead: 'crm.deals.read',
  dealsWrite: 'crm.deals.write',
};

// --- the CRM in memory --------------------------------------------------

const seed = JSON.parse(readFileSync(new URL('../seed/seed.json', import.meta.url), 'utf8'));
const started = new Date().toISOString();
const contacts = seed.contacts.map((c) => ({ ...c, created_at: started, updated_at: started }));
const deals = seed.deals.map((d) => ({ ...d, created_at: started, updated_at: started }));
const classifications = ['public', 'internal', 'restricted'];
const stages = ['lead', 'qualified', 'proposal', 'negotiation', 'won', 'lost'];

function checkLimit(limit) {
  if (limit === undefined || limit === 0) return 50;
  if (limit < 1 || limit > 200) throw new Error(`limit must be between 1 and 200, got ${limit}`);
  return limit;
}

function findContact(id) {
  const c = contacts[id - 1];
  if (!c) throw new Error(`contact ${id} not found`);
  return c;
}

function checkContact(c) {
  c.name = c.name.trim();
  c.email = c.email.trim();
  c.sector = c.sector.trim().toLowerCase();
  c.classification = c.classification.trim().toLowerCase();
  if (c.name === '') throw new Error('name is required');
  if (!c.email.includes('@')) throw new Error(`email ${JSON.stringify(c.email)} is not an email address`);
  if (!classifications.includes(c.classification)) {
    throw new Error(`classification ${JSON.stringify(c.classification)} is not one of ${classifications.join(', ')}`);
  }
}

function checkStage(stage) {
  const st = stage.trim().toLowerCase();
  if (!stages.includes(st)) throw new Error(`stage ${JSON.stringify(stage)} is not one of ${stages.join(', ')}`);
  return st;
}

function matches(c, q) {
  if (!q) return true;
  q = q.toLowerCase();
  return [c.name, c.email, c.company, c.sector].some((f) => f.toLowerCase().includes(q));
}

// --- tools ----------------------------------------------------------------

const contactShape = {
  id: z.number().int(),
  name: z.string(),
  email: z.string(),
  phone: z.string(),
  company: z.string(),
  sector: z.string(),
  classification: z.string(),
  owner: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
};
const dealShape = {
  id: z.number().int(),
  contact_id: z.number().int(),
  title: z.string(),
  amount: z.number().int(),
  currency: z.string(),
  stage: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
};

// result returns a tool result the way the SDK's examples do: the
// structured output and its JSON as text.
function result(out) {
  return { content: [{ type: 'text', text: JSON.stringify(out) }], structuredContent: out };
}

function requireScope(extra, scope) {
  if (!extra.authInfo?.scopes.includes(scope)) throw new Error(`this call needs the ${scope} scope`);
}

function buildServer() {
  const server = new McpServer({ name: 'crm-typescript-peer', version: 'bench' });
  const readOnly = { readOnlyHint: true, idempotentHint: true };

  server.registerTool('list_contacts', {
    title: 'List contacts',
    description: 'List CRM contacts, optionally filtered by a search text.',
    inputSchema: {
      query: z.string().optional().describe('text to look for in name, email, company or sector (case-insensitive); empty lists everyone'),
      limit: z.number().int().optional().describe('maximum number of contacts to return, 1 to 200 (default 50)'),
      offset: z.number().int().optional().describe('number of contacts to skip, for paging'),
      include_restricted: z.boolean().optional().describe('also return contacts classified restricted'),
    },
    outputSchema: { contacts: z.array(z.object(contactShape)), withheld_restricted: z.number().int() },
    annotations: readOnly,
  }, async ({ query, limit, offset = 0, include_restricted = false }, extra) => {
    requireScope(extra, scopes.contactsRead);
    limit = checkLimit(limit);
    if (offset < 0) throw new Error(`offset must not be negative, got ${offset}`);
    const out = [];
    let withheld = 0;
    for (const c of contacts) {
      if (!matches(c, query)) continue;
      if (c.classification === 'restricted' && !include_restricted) { withheld++; continue; }
      if (offset > 0) { offset--; continue; }
      if (out.length < limit) out.push(c);
    }
    return result({ contacts: out, withheld_restricted: withheld });
  });

  server.registerTool('get_contact', {
    title: 'Get a contact',
    description: 'Get one CRM contact by id.',
    inputSchema: { id: z.number().int().describe("the contact's id, as shown by list_contacts") },
    outputSchema: contactShape,
    annotations: readOnly,
  }, async ({ id }, extra) => {
    requireScope(extra, scopes.contactsRead);
    return result(findContact(id));
  });

  server.registerTool('create_contact', {
    title: 'Create a contact',
    description: 'Create a CRM contact. name and email are required.',
    inputSchema: {
      name: z.string().describe('full name'),
      email: z.string().describe('email address, like name@example.com'),
      phone: z.string().optional().describe('phone number'),
      company: z.string().optional().describe('company name'),
      sector: z.string().optional().describe('industry sector, e.g. technology, healthcare, finance'),
      classification: z.string().optional().describe('public, internal (default) or restricted'),
      owner: z.string().optional().describe('account owner; defaults to the signed-in user'),
    },
    outputSchema: contactShape,
  }, async (in_, extra) => {
    requireScope(extra, scopes.contactsWrite);
    const now = new Date().toISOString();
    const c = {
      id: contacts.length + 1, name: in_.name, email: in_.email, phone: in_.phone ?? '', company: in_.company ?? '',
      sector: in_.sector ?? '', classification: in_.classification ?? 'internal', owner: in_.owner || extra.authInfo.extra.sub,
      created_at: now, updated_at: now,
    };
    checkContact(c);
    contacts.push(c);
    return result(c);
  });

  server.registerTool('update_contact', {
    title: 'Update a contact',
    description: 'Change fields of a CRM contact; fields left out stay as they are.',
    inputSchema: {
      id: z.number().int().describe("the contact's id"),
      name: z.string().optional().describe('new full name'),
      email: z.string().optional().describe('new email address'),
      phone: z.string().optional().describe('new phone number'),
      company: z.string().optional().describe('new company name'),
      sector: z.string().optional().describe('new sector'),
      classification: z.string().optional().describe('new classification: public, internal or restricted'),
      owner: z.string().optional().describe('new account owner'),
    },
    outputSchema: contactShape,
  }, async ({ id, ...change }, extra) => {
    requireScope(extra, scopes.contactsWrite);
    const c = { ...findContact(id) };
    for (const [k, v] of Object.entries(change)) if (v !== undefined) c[k] = v;
    checkContact(c);
    c.updated_at = new Date().toISOString();
    contacts[id - 1] = c;
    return result(c);
  });

  server.registerTool('list_deals', {
    title: 'List deals',
    description: "List CRM deals, optionally only one stage or one contact's.",
    inputSchema: {
      stage: z.string().optional().describe('only deals in this stage: lead, qualified, proposal, negotiation, won or lost'),
      contact_id: z.number().int().optional().describe('only deals of this contact'),
      limit: z.number().int().optional().describe('maximum number of deals, 1 to 200 (default 50)'),
      include_restricted: z.boolean().optional().describe('also return deals of restricted contacts'),
    },
    outputSchema: { deals: z.array(z.object(dealShape)) },
    annotations: readOnly,
  }, async ({ stage, contact_id, limit, include_restricted = false }, extra) => {
    requireScope(extra, scopes.dealsRead);
    limit = checkLimit(limit);
    const st = stage ? checkStage(stage) : undefined;
    const withRestricted = include_restricted || !!contact_id;
    const out = [];
    for (const d of deals) {
      if ((st && d.stage !== st) || (contact_id && d.contact_id !== contact_id)) continue;
      if (contacts[d.contact_id - 1]?.classification === 'restricted' && !withRestricted) continue;
      if (out.length < limit) out.push(d);
    }
    return result({ deals: out });
  });

  server.registerTool('create_deal', {
    title: 'Create a deal',
    description: 'Create a deal with a contact.',
    inputSchema: {
      contact_id: z.number().int().describe('the contact the deal is with'),
      title: z.string().describe('short title of the deal'),
      amount: z.number().int().describe('amount in minor units (cents): 1250000 means 12,500.00'),
      currency: z.string().describe('ISO 4217 code such as USD, EUR or GBP'),
      stage: z.string().optional().describe('initial stage (default lead)'),
    },
    outputSchema: dealShape,
  }, async ({ contact_id, title, amount, currency, stage }, extra) => {
    requireScope(extra, scopes.dealsWrite);
    findContact(contact_id);
    if (title.trim() === '') throw new Error('title is required');
    if (amount < 0) throw new Error(`amount must not be negative, got ${amount}`);
    if (!/^[A-Z]{3}$/.test(currency)) throw new Error(`currency ${JSON.stringify(currency)} is not an ISO 4217 code like USD`);
    const now = new Date().toISOString();
    const d = { id: deals.length + 1, contact_id, title, amount, currency, stage: checkStage(stage ?? 'lead'), created_at: now, updated_at: now };
    deals.push(d);
    return result(d);
  });

  server.registerTool('update_deal_stage', {
    title: 'Move a deal to another stage',
    description: 'Set the stage of a deal.',
    inputSchema: {
      id: z.number().int().describe("the deal's id, as shown by list_deals"),
      stage: z.string().describe('new stage: lead, qualified, proposal, negotiation, won or lost'),
    },
    outputSchema: dealShape,
  }, async ({ id, stage }, extra) => {
    requireScope(extra, scopes.dealsWrite);
    const d = deals[id - 1];
    if (!d) throw new Error(`deal ${id} not found`);
    d.stage = checkStage(stage);
    d.updated_at = new Date().toISOString();
    return result(d);
  });

  return server;
}

// --- the front door -----------------------------------------------------

const jwks = createRemoteJWKSet(new URL(flags['jwks-url']));

// verifyAccessToken is the verifier requireBearerAuth calls: jose checks
// the signature against the cached JWKS, the issuer, the audience and the
// time claims (exp required, 30 s of leeway, as crm-mcp allows).
const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, { issuer, audience: resource, requiredClaims: ['exp'], clockTolerance: 30 }));
    } catch (err) {
      throw new InvalidTokenError(`invalid token: ${err.code ?? err.message}`);
    }
    return {
      token,
      clientId: String(payload.client_id ?? payload.azp ?? ''),
      scopes: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
      expiresAt: payload.exp,
      resource: new URL(resource),
      extra: { sub: payload.sub },
    };
  },
};

const resourceMetadataUrl = new URL('/.well-known/oauth-protected-resource/mcp', resource).href;
const app = createMcpExpressApp({ host });
app.use(mcpAuthMetadataRouter({
  oauthMetadata: {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    response_types_supported: ['code'],
  },
  resourceServerUrl: new URL(resource),
  scopesSupported: Object.values(scopes),
  resourceName: 'CRM (TypeScript peer)',
}));
const bearer = requireBearerAuth({ verifier, resourceMetadataUrl });

// sessions maps a session id to its transport and the subject it belongs
// to: a session is only ever used with a token of the user who opened it.
const sessions = new Map();

function sessionFor(req, res) {
  const id = req.headers['mcp-session-id'];
  const s = id && sessions.get(id);
  if (!s) {
    res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
    return undefined;
  }
  if (s.sub !== req.auth.extra.sub) {
    res.status(403).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session belongs to another user' }, id: null });
    return undefined;
  }
  return s.transport;
}

app.post('/mcp', bearer, async (req, res) => {
  if (!req.headers['mcp-session-id'] && isInitializeRequest(req.body)) {
    const sub = req.auth.extra.sub;
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => { sessions.set(id, { transport, sub }); },
    });
    transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
    await buildServer().connect(transport);
    await transport.handleRequest(req, res, req.body);
    return;
  }
  if (!req.headers['mcp-session-id']) {
    res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
    return;
  }
  const transport = sessionFor(req, res);
  if (transport) await transport.handleRequest(req, res, req.body);
});

const handleSession = async (req, res) => {
  const transport = sessionFor(req, res);
  if (transport) await transport.handleRequest(req, res);
};
app.get('/mcp', bearer, handleSession);
app.delete('/mcp', bearer, handleSession);

const httpServer = app.listen(Number(port), host, () => {
  console.log(`typescript peer ready: ${resource}`);
});
httpServer.on('error', (err) => { console.error(`typescript peer: ${err.message}`); process.exit(1); });
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const { transport } of sessions.values()) transport.close();
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

function splitHostPort(addr) {
  const i = addr.lastIndexOf(':');
  if (i < 0) throw new Error(`--addr ${addr} is not host:port`);
  return [addr.slice(0, i).replace(/^\[|\]$/g, ''), addr.slice(i + 1)];
}
