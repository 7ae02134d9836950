// node-oidc-provider for the side-by-side benchmark (bench/README.md): one Node process, its default
// in-memory adapter, one confidential client (client_secret_basic) like ours, ES256 JWT access tokens
// (RFC 9068 through resource indicators) for client_credentials and refresh, refresh tokens rotated on use.
//
// Started by bench/run.py with PORT, CLIENT_ID, CLIENT_SECRET and MINT_PORT: a second listener, apart from the
// provider's routes (so that nothing is added to the measured requests' path), that mints refresh tokens on
// demand (`GET /mint?count=N` answers N never-used tokens, one a line). Not part of the product.
//
// Why on demand and not at start: the default in-memory adapter is an LRU of 1,000 entries (two generations),
// and every rotation writes a new entry, so a token nobody touched is forgotten after one to two thousand
// writes, well under a second of rotations. Tokens minted at start were all gone ("refresh token not found",
// answered as invalid_grant) once the warm-up or an earlier figure had rotated for a second. run.py therefore
// mints each pool just before it is spent: the warm-up's, then, after the warm-up, the measured run's.
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// Installed by bench/run.py into .cache/bench-node (never globally, never saved in a package.json).
const { default: Provider } = await import(
  pathToFileURL(join(process.env.NODE_MODULES_DIR, 'oidc-provider', 'lib', 'index.js')).href);

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.CLIENT_ID;
const clientSecret = process.env.CLIENT_SECRET;
const resource = 'urn:bench:api';

// The same kinds of published keys as ours: one EC P-256 (ES256) and one RSA 3072 (RS256) signing key.
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
    id_token_signed_response_alg: 'ES256',
    scope: 'openid offline_access api',
  }],
  jwks: { keys: [{ ...ec, alg: 'ES256', use: 'sig', kid: 'ec1' }, { ...rsa, alg: 'RS256', use: 'sig', kid: 'rsa1' }] },
  scopes: ['openid', 'offline_access', 'api'],
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  rotateRefreshToken: true,
  ttl: { AccessToken: 600, ClientCredentials: 600, RefreshToken: 36000 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api', accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.proxy = false;

// Refresh tokens as the authorization code grant would leave them (a grant with the resource scope), minted
// directly: this provider has no browser-less sign-in, and the benchmark measures the rotation, not the sign-in.
async function mint(count) {
  const client = await provider.Client.find(clientId);
  const tokens = [];
  for (let i = 0; i < count; i += 1) {
    const accountId = `user${i}`;
    const grant = new provider.Grant({ accountId, clientId });
    grant.addOIDCScope('offline_access');
    grant.addResourceScope(resource, 'api');
    const grantId = await grant.save();
    const token = new provider.RefreshToken({
      accountId, client, grantId, gty: 'authorization_code', scope: 'offline_access api', resource,
      authTime: Math.floor(Date.now() / 1000),
    });
    tokens.push(await token.save());
  }
  return tokens;
}

// Why a refresh was refused (the answer only says "grant request is invalid" in production): the first few, for
// the log.
let refused = 0;
provider.on('grant.error', (ctx, error) => {
  if (refused < 5) {
    refused += 1;
    console.log(`grant refused: ${error.error} ${error.error_detail ?? error.message}`);
  }
});

createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const count = Number(url.searchParams.get('count'));
  if (url.pathname !== '/mint' || !Number.isInteger(count) || count < 1 || count > 10000) {
    res.writeHead(400).end();
    return;
  }
  try {
    const tokens = await mint(count);
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`${tokens.join('\n')}\n`);
  } catch (error) {
    res.writeHead(500).end(String(error));
  }
}).listen(Number(process.env.MINT_PORT), '127.0.0.1', () => {
  provider.listen(port, '127.0.0.1', () => {
    console.log(`ready ${issuer}`);
  });
});
