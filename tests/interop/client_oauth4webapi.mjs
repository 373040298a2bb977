// A service client written with oauth4webapi, given only the issuer URL and its credentials.
//
//   node client_oauth4webapi.mjs ISSUER CLIENT_ID CLIENT_SECRET
//
// Discovers the issuer (RFC 8414), then with client_secret_basic and client_secret_post in
// turn obtains a token (client credentials, scope "introspect") and introspects it. Prints
// one "ok ..." line per check; exits 0 only if all passed.
import * as oauth from 'oauth4webapi';

const [issuerText, clientId, secret] = process.argv.slice(2);
const issuer = new URL(issuerText);
// The test server is plain http on loopback; oauth4webapi asks for this to be said.
const insecure = { [oauth.allowInsecureRequests]: true };
let failed = 0;
const check = (name, ok, detail) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : `: ${JSON.stringify(detail)}`}`);
  if (!ok) failed += 1;
};

try {
  const as = await oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
  );
  check('oauth4webapi discovers the issuer', as.token_endpoint !== undefined, as);
  const client = { client_id: clientId };
  for (const [name, auth] of [
    ['client_secret_basic', oauth.ClientSecretBasic(secret)],
    ['client_secret_post', oauth.ClientSecretPost(secret)],
  ]) {
    const response = await oauth.clientCredentialsGrantRequest(
      as, client, auth, new URLSearchParams({ scope: 'introspect' }), insecure,
    );
    const token = await oauth.processClientCredentialsResponse(as, client, response);
    check(`oauth4webapi (${name}) obtains a token`, token.token_type === 'bearer' && !!token.access_token, token);
    const answer = await oauth.introspectionRequest(as, client, auth, token.access_token, insecure);
    const info = await oauth.processIntrospectionResponse(as, client, answer);
    check(`oauth4webapi (${name}) introspects it: active, its client_id`,
      info.active === true && info.client_id === clientId, info);
  }
} catch (e) {
  check('oauth4webapi ran without an error', false, String(e?.stack ?? e));
}
process.exit(failed ? 1 : 0);
