#!/usr/bin/env node
// A third-party verifier of gatehouse access tokens: `jose` with createRemoteJWKSet, given only
// the issuer.
//
//     node verify_jose.mjs ISSUER_URL [AUDIENCE]        (AUDIENCE defaults to "gatehouse")
//
// Reads `<issuer>/.well-known/openid-configuration` once, checks that its `issuer` is exactly
// ISSUER_URL, takes `jwks_uri` from it and verifies tokens the way a backend service would:
// RS256 only, `typ` JWT, `iss` and `aud` checked, `exp`/`iat`/`nbf`/`sub` required, the key chosen
// by `kid` from the cached JWK Set. Long-lived, one command per stdin line, one answer per line:
//
//     VERIFY <jwt>  ->  OK kid=<kid> sub=<sub> fetches=<n>   |  FAIL <error> fetches=<n>
//     RELOAD        ->  OK kids=<kid,kid,...> fetches=<n>     (fetch the JWK Set now, as a periodic refresh would)
//     FETCHES       ->  OK fetches=<n>
//
// The JWK Set cache lives 10 minutes and an unknown `kid` may trigger a refetch only 10 minutes
// after the last fetch (cooldown), so within a test run a token verifies only if its key was
// already in the set this instance cached; `fetches` counts JWKS downloads so the driver can
// prove it.
import { createInterface } from 'node:readline';
import { createRemoteJWKSet, customFetch, jwtVerify } from 'jose';

const issuer = process.argv[2];
const audience = process.argv[3] ?? 'gatehouse';
let fetches = 0;
const answer = (line) => process.stdout.write(`${line}\n`);

let jwks;
try {
  const res = await fetch(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`);
  if (res.status !== 200) throw new Error(`discovery answered ${res.status}`);
  const discovery = await res.json();
  if (discovery.issuer !== issuer) {
    throw new Error(`discovery issuer ${JSON.stringify(discovery.issuer)} is not ${JSON.stringify(issuer)}`);
  }
  jwks = createRemoteJWKSet(new URL(discovery.jwks_uri), {
    cacheMaxAge: 600_000,
    cooldownDuration: 600_000,
    [customFetch]: (url, options) => {
      fetches += 1;
      return fetch(url, options);
    },
  });
  answer(`READY jwks_uri=${discovery.jwks_uri}`);
} catch (err) {
  answer(`FAIL discovery: ${err.name}: ${err.message}`);
  process.exit(1);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const raw of lines) {
  const line = raw.trim();
  const space = line.indexOf(' ');
  const cmd = space < 0 ? line : line.slice(0, space);
  const arg = space < 0 ? '' : line.slice(space + 1);
  try {
    if (cmd === 'VERIFY') {
      const { payload, protectedHeader } = await jwtVerify(arg, jwks, {
        issuer,
        audience,
        algorithms: ['RS256'],
        typ: 'JWT',
        requiredClaims: ['exp', 'iat', 'nbf', 'sub'],
      });
      answer(`OK kid=${protectedHeader.kid} sub=${payload.sub} fetches=${fetches}`);
    } else if (cmd === 'RELOAD') {
      await jwks.reload();
      answer(`OK kids=${jwks.jwks().keys.map((k) => k.kid).join(',')} fetches=${fetches}`);
    } else if (cmd === 'FETCHES') {
      answer(`OK fetches=${fetches}`);
    } else {
      answer(`FAIL unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (err) {
    answer(`FAIL ${err.code ?? err.name}: ${String(err.message).replace(/\s+/g, ' ')} fetches=${fetches}`);
  }
}
