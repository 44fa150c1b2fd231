// Interop harness: panva's certified `oidc-provider` (pinned 8.8.1) as a partner-facing OAuth 2.0
// authorization server for Gatehouse tests. mTLS (RFC 8705) client_credentials, token
// introspection (RFC 7662) with optional JWT responses (RFC 9701), revocation (RFC 7009) and
// JWT access tokens (RFC 9068) for one resource indicator (RFC 8707).
//
// Configured only from the environment (see README.md). Prints exactly one line to stdout,
// `READY <issuer>`, once listening; everything else (diagnostics, oidc-provider notices) goes
// to stderr. Never logs secrets or tokens. Exits on SIGTERM/SIGINT. DEV/TEST ONLY: in-memory
// storage, keys generated at start.

// oidc-provider prints NOTICEs with console.info (stdout). Keep stdout to the READY line only.
console.info = console.log = (...args) => console.error(...args);

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

function die(msg) {
  console.error(`oidc-provider harness: ${msg}`);
  process.exit(2);
}

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback === undefined) die(`missing required environment variable ${name}`);
    return fallback;
  }
  return v;
}

function readPem(name) {
  const file = env(name);
  try {
    return fs.readFileSync(file);
  } catch (err) {
    return die(`${name}: cannot read ${file}: ${err.code || err.message}`);
  }
}

const PORT = Number.parseInt(env('PORT', '0'), 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) die('PORT must be 0..65535');
const TLS_CERT = readPem('TLS_CERT');
const TLS_KEY = readPem('TLS_KEY');
const CLIENT_CA = readPem('CLIENT_CA');
const GATEWAY_SECRET = env('GATEWAY_SECRET');
const PARTNER_A_SUBJECT = env('PARTNER_A_SUBJECT', 'CN=partner-a,O=partner-a Ltd');
const PARTNER_B_SUBJECT = env('PARTNER_B_SUBJECT', 'CN=partner-b,O=partner-b Ltd');
const RESOURCE = env('RESOURCE', 'https://api.example.com');
const SIGNING_ALG = env('SIGNING_ALG', 'ES256');
if (!['ES256', 'RS256', 'PS256'].includes(SIGNING_ALG)) die('SIGNING_ALG must be ES256, RS256 or PS256');
const TOKEN_TTL = 300;

let RESOURCE_HREF;
try {
  RESOURCE_HREF = new URL(RESOURCE).href;
} catch {
  die('RESOURCE must be an absolute URI');
}

// --- subject DN matching -------------------------------------------------------------------
// oidc-provider 8.x does not compare tls_client_auth_subject_dn itself: it calls
// features.mTLS.certificateSubjectMatches(ctx, 'tls_client_auth_subject_dn', registeredValue)
// and leaves the comparison to us. We parse the registered value as an RFC 4514 string
// ("CN=partner-a,O=partner-a Ltd": most specific RDN first) and the certificate's subject as
// Node prints it (X509Certificate#subject: one RDN per line, in certificate order, values with
// RFC 2253 escaping, multi-valued RDNs joined by " + "), then compare RDN by RDN: attribute
// types case-insensitively (with a few aliases), values case-insensitively with insignificant
// whitespace collapsed (RFC 5280 §7.1 / RFC 4518 in spirit). The registered value may be given
// in RFC 4514 order or in certificate order (as `openssl x509 -subject` prints it).

const TYPE_ALIASES = new Map([
  ['COMMONNAME', 'CN'], ['ORGANIZATIONNAME', 'O'], ['ORGANIZATIONALUNITNAME', 'OU'],
  ['COUNTRYNAME', 'C'], ['LOCALITYNAME', 'L'], ['STATEORPROVINCENAME', 'ST'], ['S', 'ST'],
  ['STREETADDRESS', 'STREET'], ['DOMAINCOMPONENT', 'DC'], ['USERID', 'UID'],
  ['E', 'EMAILADDRESS'], ['EMAIL', 'EMAILADDRESS'], ['2.5.4.3', 'CN'], ['2.5.4.10', 'O'],
  ['2.5.4.11', 'OU'], ['2.5.4.6', 'C'], ['2.5.4.7', 'L'], ['2.5.4.8', 'ST'],
  ['1.2.840.113549.1.9.1', 'EMAILADDRESS'], ['SERIALNUMBER', 'SERIALNUMBER'],
]);

// split on an unescaped separator character (backslash escapes, double quotes)
function splitUnescaped(s, seps) {
  const out = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i += 1) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i += 1;
    } else if (c === '"') {
      quoted = !quoted;
      cur += c;
    } else if (!quoted && seps.includes(c)) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

function unescapeValue(raw) {
  let v = raw.trim();
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
  const bytes = [];
  for (let i = 0; i < v.length; i += 1) {
    if (v[i] === '\\' && /^[0-9a-fA-F]{2}$/.test(v.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(v.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (v[i] === '\\' && i + 1 < v.length) {
      bytes.push(...Buffer.from(v[i + 1]));
      i += 1;
    } else {
      bytes.push(...Buffer.from(v[i]));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function normAva(ava) {
  const eq = ava.indexOf('=');
  if (eq < 1) return null;
  let type = ava.slice(0, eq).trim().toUpperCase();
  if (type.startsWith('OID.')) type = type.slice(4);
  type = TYPE_ALIASES.get(type) || type;
  const value = unescapeValue(ava.slice(eq + 1)).normalize('NFKC').replace(/\s+/g, ' ').trim().toLowerCase();
  return `${type}=${value}`;
}

// an RDN is a set of AVAs: sort them so "A+B" equals "B+A"
function normRdn(rdn) {
  const avas = splitUnescaped(rdn, '+').map(normAva);
  if (avas.some((a) => a === null)) return null;
  return avas.sort().join('+');
}

function parseRfc4514(dn) {
  const rdns = splitUnescaped(dn, ',;').filter((r) => r.trim() !== '').map(normRdn);
  return rdns.some((r) => r === null) ? null : rdns; // RFC 4514 order (reverse of certificate)
}

function parseNodeSubject(subject) {
  const rdns = subject.split('\n').filter((r) => r.trim() !== '').map(normRdn);
  return rdns.some((r) => r === null) ? null : rdns; // certificate order
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function subjectDnMatches(cert, expected) {
  const want = parseRfc4514(expected);
  const have = parseNodeSubject(cert.subject);
  if (!want || !have || want.length === 0) return false;
  return sameList([...want].reverse(), have) || sameList(want, have);
}

// --- provider --------------------------------------------------------------------------------

function peerCertificate(ctx) {
  const socket = ctx.req.socket;
  if (typeof socket.getPeerX509Certificate !== 'function') return undefined;
  return socket.getPeerX509Certificate(); // crypto.X509Certificate or undefined
}

function signingKeys() {
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const kid = () => crypto.randomBytes(8).toString('hex');
  return { keys: [{ ...ec, kid: `ec-${kid()}`, use: 'sig' }, { ...rsa, kid: `rsa-${kid()}`, use: 'sig' }] };
}

function partner(clientId, subjectDn) {
  return {
    client_id: clientId,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: subjectDn,
    tls_client_certificate_bound_access_tokens: true,
    scope: 'transactions',
  };
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      partner('partner-a', PARTNER_A_SUBJECT),
      partner('partner-b', PARTNER_B_SUBJECT),
      {
        client_id: 'gateway',
        client_secret: GATEWAY_SECRET,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        introspection_signed_response_alg: SIGNING_ALG,
      },
    ],
    clientAuthMethods: ['tls_client_auth', 'client_secret_basic'],
    scopes: ['transactions'],
    jwks: signingKeys(),
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    ttl: { ClientCredentials: TOKEN_TTL },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // the gateway (the resource server) may introspect any token; a client only its own
        allowedPolicy: async (ctx, client, token) => client.clientId === 'gateway' || token.clientId === client.clientId,
      },
      jwtIntrospection: { enabled: true },
      revocation: { enabled: true },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        getCertificate: peerCertificate,
        // verified against CLIENT_CA by Node's TLS stack (requestCert, rejectUnauthorized:false)
        certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => {
          if (property !== 'tls_client_auth_subject_dn') return false;
          const cert = peerCertificate(ctx);
          return !!cert && subjectDnMatches(cert, expected);
        },
      },
      resourceIndicators: {
        enabled: true,
        // no `resource` in the request -> no resource server -> opaque access token
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          let href;
          try { href = new URL(resourceIndicator).href; } catch { href = undefined; }
          if (href !== RESOURCE_HREF) throw new errors.InvalidTarget('unknown resource indicator');
          return {
            scope: 'transactions',
            audience: RESOURCE,
            accessTokenTTL: TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: SIGNING_ALG } },
          };
        },
      },
    },
  });

  // one stderr line per failure, no secrets or token values
  const logError = (event) => (ctx, err) => {
    const client = ctx?.oidc?.client?.clientId || '-';
    const detail = err.error_detail ? ` [${err.error_detail}]` : '';
    console.error(`${event}: ${err.error || err.name}: ${err.error_description || err.message}${detail} (client ${client})`);
  };
  for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error', 'userinfo.error']) {
    provider.on(event, logError(event));
  }
  provider.on('server_error', (ctx, err) => console.error(`server_error: ${err.stack || err}`));
  return provider;
}

// --- server ----------------------------------------------------------------------------------

let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = https.createServer({
  cert: TLS_CERT,
  key: TLS_KEY,
  ca: CLIENT_CA,
  requestCert: true,
  rejectUnauthorized: false, // let oidc-provider decide (certificateAuthorized) per request
}, (req, res) => handler(req, res));

server.on('tlsClientError', () => {}); // handshake failures are the client's problem
server.on('error', (err) => die(`listen: ${err.code || err.message}`));

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = env('ISSUER', `https://localhost:${port}`);
  let provider;
  try {
    provider = buildProvider(issuer);
  } catch (err) {
    die(`configuration: ${err.message}`);
  }
  handler = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
