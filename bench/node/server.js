// The Node.js service gatehouse is compared with (bench/run.sh): what a user following
// the usual guide would build with Express, jsonwebtoken, an Argon2 binding and
// better-sqlite3. Written for the benchmark only; it is not part of the product.
//
// Same work per request as gatehouse where it matters for the comparison:
//   - Argon2id m=19456 KiB, t=2, p=1 (hash on signup, verify on login; a dummy hash
//     is verified for an unknown email);
//   - RS256 access tokens from an RSA-2048 key (parsed once into a KeyObject, which is
//     kinder to Node than passing the PEM string on every call);
//   - refresh tokens: 256 random bits, only their SHA-256 stored; a refresh looks the
//     hash up, spends it and inserts the child in ONE immediate transaction; presenting
//     a spent token revokes the family;
//   - /v1/me verifies the bearer token and loads the user from the database;
//   - the JWKS is serialized once, with a strong ETag and 304 on If-None-Match.
// Two cluster workers (NODE_WORKERS) share the port; WAL mode, synchronous per
// SQLITE_SYNCHRONOUS (normal by default, like gatehouse).
//
// Environment: PORT (required), DATA_DIR (required: the database and the key live
// there), NODE_WORKERS (2), SQLITE_SYNCHRONOUS (normal|full).

'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const PORT = Number(process.env.PORT);
const DATA_DIR = process.env.DATA_DIR;
const WORKERS = Number(process.env.NODE_WORKERS || 2);
const SYNC = (process.env.SQLITE_SYNCHRONOUS || 'normal').toUpperCase();
const ISSUER = `http://127.0.0.1:${PORT}`;
const AUDIENCE = 'gatehouse';
const ACCESS_TTL = 3600;
const REFRESH_TTL = 12 * 3600;
const FAMILY_TTL = 7 * 24 * 3600;
const ARGON2 = { memoryCost: 19456, timeCost: 2, parallelism: 1 };

if (!PORT || !DATA_DIR) {
  console.error('PORT and DATA_DIR are required');
  process.exit(1);
}
const DB_PATH = path.join(DATA_DIR, 'node.db');
const KEY_PATH = path.join(DATA_DIR, 'key.pem');

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
  role TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refresh_families (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  revoked_at INTEGER, revoked_reason TEXT);
CREATE INDEX IF NOT EXISTS refresh_families_user ON refresh_families (user_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
  hash BLOB PRIMARY KEY, family_id TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
  parent_hash BLOB, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, spent_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
`;

function openDb() {
  const Database = require('better-sqlite3');
  const db = new Database(DB_PATH);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${SYNC}`);
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  return db;
}

if (cluster.isPrimary) {
  fs.mkdirSync(DATA_DIR, { recursive: true, mode: 0o700 });
  if (!fs.existsSync(KEY_PATH)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(KEY_PATH, privateKey.export({ type: 'pkcs8', format: 'pem' }), {
      mode: 0o600,
    });
  }
  const db = openDb();
  db.exec(SCHEMA);
  db.close();
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} died (${signal || code})`);
    process.exitCode = 1;
  });
} else {
  worker();
}

function worker() {
  const express = require('express');
  const jwt = require('jsonwebtoken');
  const argon2 = require('argon2');

  const db = openDb();
  const privateKey = crypto.createPrivateKey(fs.readFileSync(KEY_PATH));
  const publicKey = crypto.createPublicKey(privateKey);
  const jwk = publicKey.export({ format: 'jwk' });
  const kid = crypto
    .createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n }))
    .digest('base64url');
  const jwksBody = JSON.stringify({
    keys: [{ kty: 'RSA', use: 'sig', alg: 'RS256', kid, n: jwk.n, e: jwk.e }],
  });
  const jwksEtag = `"${crypto.createHash('sha256').update(jwksBody).digest('base64url').slice(0, 27)}"`;

  const stmt = {
    insertUser: db.prepare(
      'INSERT INTO users (id, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)',
    ),
    userByEmail: db.prepare('SELECT * FROM users WHERE email = ?'),
    userById: db.prepare('SELECT * FROM users WHERE id = ?'),
    insertFamily: db.prepare(
      'INSERT INTO refresh_families (id, user_id, created_at, last_used_at, expires_at) VALUES (?, ?, ?, ?, ?)',
    ),
    insertToken: db.prepare(
      'INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)',
    ),
    findToken: db.prepare(
      `SELECT t.family_id, t.expires_at AS token_expires_at, t.spent_at,
              f.expires_at AS family_expires_at, f.revoked_at, u.*
       FROM refresh_tokens t
       JOIN refresh_families f ON f.id = t.family_id
       JOIN users u ON u.id = f.user_id
       WHERE t.hash = ?`,
    ),
    spend: db.prepare('UPDATE refresh_tokens SET spent_at = ? WHERE hash = ? AND spent_at IS NULL'),
    touchFamily: db.prepare('UPDATE refresh_families SET last_used_at = ? WHERE id = ?'),
    revokeFamily: db.prepare(
      "UPDATE refresh_families SET revoked_at = ?, revoked_reason = 'reuse_detected' WHERE id = ? AND revoked_at IS NULL",
    ),
    ping: db.prepare('SELECT 1'),
  };

  const now = () => Math.floor(Date.now() / 1000);
  const sha256 = (s) => crypto.createHash('sha256').update(s).digest();
  const newToken = () => crypto.randomBytes(32).toString('base64url');
  const hashOpts = { type: argon2.argon2id, ...ARGON2 };
  const dummyHash = argon2.hash(crypto.randomBytes(16).toString('base64url'), hashOpts);

  const createFamily = db.transaction((userId, tokenHash, t) => {
    const familyId = crypto.randomUUID();
    stmt.insertFamily.run(familyId, userId, t, t, t + FAMILY_TTL);
    stmt.insertToken.run(tokenHash, familyId, null, t, t + REFRESH_TTL);
    return familyId;
  });

  // Look up, spend, insert the child: one transaction, taken with the write lock first.
  const rotate = db.transaction((presented, childHash, t) => {
    const row = stmt.findToken.get(presented);
    if (!row || row.revoked_at !== null || row.family_expires_at <= t || row.disabled) {
      return { outcome: 'invalid' };
    }
    if (row.spent_at !== null) {
      stmt.revokeFamily.run(t, row.family_id);
      return { outcome: 'reused' };
    }
    if (row.token_expires_at <= t) return { outcome: 'invalid' };
    stmt.spend.run(t, presented);
    const childExpires = Math.min(t + REFRESH_TTL, row.family_expires_at);
    stmt.insertToken.run(childHash, row.family_id, presented, t, childExpires);
    stmt.touchFamily.run(t, row.family_id);
    return { outcome: 'rotated', row, childExpires };
  });

  const userDto = (u) => ({
    id: u.id,
    email: u.email,
    role: u.role,
    disabled: !!u.disabled,
    created_at: new Date(u.created_at * 1000).toISOString(),
  });

  function tokenResponse(user, familyId, refreshToken, refreshExpires, t) {
    const accessToken = jwt.sign(
      {
        iss: ISSUER,
        aud: AUDIENCE,
        sub: user.id,
        iat: t,
        nbf: t,
        exp: t + ACCESS_TTL,
        jti: crypto.randomUUID(),
        sid: familyId,
        role: user.role,
      },
      privateKey,
      { algorithm: 'RS256', keyid: kid, header: { typ: 'JWT' } },
    );
    return {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: ACCESS_TTL,
      refresh_token: refreshToken,
      refresh_expires_in: refreshExpires - t,
      user: userDto(user),
    };
  }

  const error = (res, status, code, message) =>
    res.status(status).json({ error: code, message });

  const validEmail = (e) => typeof e === 'string' && e.length <= 254 && /^[^@\s]+@[^@\s]+$/.test(e);
  const validPassword = (p) =>
    typeof p === 'string' &&
    p.length >= 12 &&
    p.length <= 128 &&
    /[A-Z]/.test(p) &&
    /[a-z]/.test(p) &&
    /[0-9]/.test(p) &&
    /[^A-Za-z0-9]/.test(p);

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));
  app.use((req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  app.get('/.well-known/jwks.json', (req, res) => {
    res.set('Cache-Control', 'public, max-age=300');
    res.set('ETag', jwksEtag);
    const inm = req.get('If-None-Match');
    if (inm && inm.split(',').some((t) => t.trim() === jwksEtag || t.trim() === '*')) {
      return res.status(304).end();
    }
    res.type('application/json').send(jwksBody);
  });

  app.get('/readyz', (req, res) => {
    stmt.ping.get();
    res.json({ status: 'ready' });
  });

  app.post('/v1/signup', async (req, res, next) => {
    try {
      const { email, password } = req.body || {};
      if (!validEmail(email) || !validPassword(password)) {
        return error(res, 400, 'validation_failed', 'invalid email or password');
      }
      const normalized = email.trim().toLowerCase();
      const hash = await argon2.hash(password, hashOpts);
      const t = now();
      const user = {
        id: crypto.randomUUID(),
        email: normalized,
        role: 'user',
        disabled: 0,
        created_at: t,
      };
      try {
        stmt.insertUser.run(user.id, user.email, hash, user.role, t);
      } catch (e) {
        if (String(e.code).startsWith('SQLITE_CONSTRAINT')) {
          return error(res, 409, 'email_taken', 'email already registered');
        }
        throw e;
      }
      const refresh = newToken();
      const familyId = createFamily.immediate(user.id, sha256(refresh), t);
      res.status(201).json(tokenResponse(user, familyId, refresh, t + REFRESH_TTL, t));
    } catch (e) {
      next(e);
    }
  });

  app.post('/v1/login', async (req, res, next) => {
    try {
      const { email, password } = req.body || {};
      if (!validEmail(email) || typeof password !== 'string') {
        return error(res, 400, 'validation_failed', 'invalid email or password');
      }
      const user = stmt.userByEmail.get(email.trim().toLowerCase());
      const ok = await argon2.verify(user ? user.password_hash : await dummyHash, password);
      if (!user || !ok || user.disabled) {
        return error(res, 401, 'invalid_credentials', 'wrong email or password');
      }
      const t = now();
      const refresh = newToken();
      const familyId = createFamily.immediate(user.id, sha256(refresh), t);
      res.json(tokenResponse(user, familyId, refresh, t + REFRESH_TTL, t));
    } catch (e) {
      next(e);
    }
  });

  app.post('/v1/refresh', (req, res) => {
    const presented = req.body && req.body.refresh_token;
    if (typeof presented !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(presented)) {
      return error(res, 401, 'invalid_refresh_token', 'invalid refresh token');
    }
    const t = now();
    const child = newToken();
    const r = rotate.immediate(sha256(presented), sha256(child), t);
    if (r.outcome === 'reused') {
      return error(res, 401, 'refresh_token_reused', 'refresh token reused; session revoked');
    }
    if (r.outcome !== 'rotated') {
      return error(res, 401, 'invalid_refresh_token', 'invalid refresh token');
    }
    res.json(tokenResponse(r.row, r.row.family_id, child, r.childExpires, t));
  });

  app.get('/v1/me', (req, res) => {
    const auth = req.get('Authorization') || '';
    const m = /^Bearer (.+)$/.exec(auth);
    let claims;
    try {
      if (!m) throw new Error('no token');
      claims = jwt.verify(m[1], publicKey, {
        algorithms: ['RS256'],
        issuer: ISSUER,
        audience: AUDIENCE,
        clockTolerance: 30,
      });
    } catch {
      res.set('WWW-Authenticate', 'Bearer');
      return error(res, 401, 'invalid_token', 'invalid access token');
    }
    const user = stmt.userById.get(claims.sub);
    if (!user || user.disabled) {
      res.set('WWW-Authenticate', 'Bearer');
      return error(res, 401, 'invalid_token', 'invalid access token');
    }
    res.json(userDto(user));
  });

  app.use((req, res) => error(res, 404, 'not_found', 'no such resource'));
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    if (err.type === 'entity.too.large') return error(res, 413, 'payload_too_large', 'too large');
    if (err.type === 'entity.parse.failed') return error(res, 400, 'invalid_json', 'bad JSON');
    console.error(err);
    error(res, 500, 'internal_error', 'internal error');
  });

  app.listen(PORT, '127.0.0.1');
}
