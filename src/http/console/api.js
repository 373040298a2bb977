// The console's only way to the server: the public API, with the tokens held in this
// module's memory. Nothing goes to web storage or cookies, so a closed tab leaves no
// token behind, and no other page can read one.

const session = { access: null, refresh: null, user: null, timer: null };
let listeners = { signedOut: () => {}, notice: () => {} };

export class ApiError extends Error {
  /** `details`: for `validation_failed`, every failing field as `{ field, message }`. */
  constructor(status, code, message, retryAfter, details = [], body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.details = details;
    /** The whole error body: `mfa_required` carries `mfa_token` and `methods`. */
    this.body = body;
  }
}

/** `signedOut(reason, kind)` when the session ends: `kind` is "info" when the admin
 * signed out, "error" when it ended by itself; `notice(text|null)` for transient trouble
 * such as "service unavailable, retrying". */
export function configure(callbacks) {
  listeners = { ...listeners, ...callbacks };
}

export function currentUser() {
  return session.user;
}

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "The service cannot be reached.", 5);
  }
  if (response.status === 204) return null;
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok) {
    const retry = Number(response.headers.get("retry-after")) || undefined;
    throw new ApiError(response.status, json?.error ?? "unknown",
      json?.message ?? `HTTP ${response.status}`, retry,
      Array.isArray(json?.details) ? json.details : [], json);
  }
  return json;
}

function adopt(tokens) {
  session.access = tokens.access_token;
  session.refresh = tokens.refresh_token;
  session.user = tokens.user;
  schedule(tokens.expires_in);
}

/** Refreshes a little before the access token expires, so a request never meets an
 * expired token in normal use: a minute early, or halfway for very short lifetimes. */
function schedule(expiresIn) {
  clearTimeout(session.timer);
  const lead = Math.min(60, expiresIn / 2);
  session.timer = setTimeout(() => refreshNow().catch(() => {}), Math.max(5, expiresIn - lead) * 1000);
}

let refreshing = null;

/** One refresh at a time: two concurrent refreshes would present the same token twice,
 * which the server may treat as reuse. */
function refreshNow() {
  if (!refreshing) {
    refreshing = doRefresh().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function doRefresh() {
  const presented = session.refresh;
  if (!presented) throw new ApiError(401, "signed_out", "Signed out.");
  try {
    const tokens = await send("POST", "/v1/refresh", { refresh_token: presented });
    if (session.refresh !== presented) {
      // Signed out or in again meanwhile: this answer belongs to a session nobody holds
      // any more, so end it rather than adopt it.
      await send("POST", "/v1/logout", { refresh_token: tokens.refresh_token }).catch(() => {});
      return;
    }
    adopt(tokens);
    listeners.notice(null);
  } catch (e) {
    if (e.code === "refresh_token_reused") {
      end("Signed out: this session's refresh token was used twice, so the server revoked "
        + "the session (reuse detected). Sign in again.");
    } else if (e.status === 401) {
      end("Your session has ended (revoked or expired). Sign in again.");
    } else {
      listeners.notice("Service unavailable, retrying…");
      clearTimeout(session.timer);
      session.timer = setTimeout(() => refreshNow().catch(() => {}), (e.retryAfter ?? 5) * 1000);
    }
    throw e;
  }
}

function forget() {
  clearTimeout(session.timer);
  session.access = null;
  session.refresh = null;
  session.user = null;
}

function end(reason) {
  forget();
  listeners.signedOut(reason, "error");
}

/** Logs in; refuses (and logs the new session out again) when the account is not an
 * admin, so a non-admin's console holds no token at all. A session this one replaces is
 * logged out: dropping its tokens alone would leave it live on the server, unseen. */
export async function signIn(email, password) {
  // A user with a second factor gets 401 `mfa_required`: the caller asks for a code and
  // finishes with `signInWithCode(e.body.mfa_token, code)`.
  return adoptAdmin(await send("POST", "/v1/login", { email, password }));
}

/** The second step of a sign-in: the `mfa_token` of `mfa_required` and a code. */
export async function signInWithCode(mfaToken, code) {
  return adoptAdmin(await send("POST", "/v1/login/mfa", { mfa_token: mfaToken, code }));
}

// ------------------------------------------------------------------ passkeys (WebAuthn)
//
// The server speaks the WebAuthn Level 3 JSON forms, binary fields as base64url; the
// browser's `navigator.credentials` takes and gives ArrayBuffers. The conversion both ways
// is done here, by hand: `PublicKeyCredential.parseCreationOptionsFromJSON` and
// `credential.toJSON()` are missing from browsers still in use.

/** What this console knows about passkeys: "unsupported" when the browser has no
 * WebAuthn (or the page is not a secure context), "off" once the server answered 404 (no
 * GATEHOUSE_WEBAUTHN_RP_ID), "on" once it answered, else "unknown". Kept for the page's
 * life, so the sign-in form after a sign-out knows what the signed-in pages learned. */
let passkeysServer = "unknown";

export function passkeys() {
  if (!window.isSecureContext || typeof PublicKeyCredential === "undefined") return "unsupported";
  return passkeysServer;
}

/** A passkey endpoint's answer, noting whether the server has passkeys at all. Only for
 * endpoints whose 404 can mean nothing else (the options, the admin's own list). */
async function passkeyCall(call) {
  try {
    const answer = await call();
    passkeysServer = "on";
    return answer;
  } catch (e) {
    if (e.status === 404) {
      passkeysServer = "off";
      throw new ApiError(404, "passkeys_off", "Passkeys are not enabled on this server.");
    }
    throw e;
  }
}

function fromBase64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(b64 + "===".slice((b64.length + 3) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function toBase64url(data) {
  const bytes = data instanceof ArrayBuffer
    ? new Uint8Array(data)
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The JSON form leaves absent members out, or may write them as null; the browser's
 * dictionaries refuse null for most of them (an enum cannot be null), so nulls go. */
function withoutNulls(value) {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value)
    .filter(([, v]) => v !== null)
    .map(([k, v]) => [k, withoutNulls(v)]));
}

const descriptor = (c) => ({ ...c, id: fromBase64url(c.id) });

/** PublicKeyCredentialCreationOptionsJSON to what `navigator.credentials.create` takes. */
function creationOptions(json) {
  const o = withoutNulls(json);
  return {
    ...o,
    challenge: fromBase64url(o.challenge),
    user: { ...o.user, id: fromBase64url(o.user.id) },
    excludeCredentials: (o.excludeCredentials ?? []).map(descriptor),
  };
}

/** PublicKeyCredentialRequestOptionsJSON to what `navigator.credentials.get` takes. No
 * `allowCredentials` stays none: the authenticator then offers its discoverable passkeys. */
function requestOptions(json) {
  const o = withoutNulls(json);
  const options = { ...o, challenge: fromBase64url(o.challenge) };
  if (o.allowCredentials) options.allowCredentials = o.allowCredentials.map(descriptor);
  return options;
}

/** Extension outputs as JSON: any binary value in them as base64url. */
function jsonable(value) {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return toBase64url(value);
  if (Array.isArray(value)) return value.map(jsonable);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonable(v)]));
}

/** A PublicKeyCredential as RegistrationResponseJSON or AuthenticationResponseJSON. */
function credentialJson(credential) {
  const r = credential.response;
  const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toBase64url(r.attestationObject);
    const transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    if (transports.length) response.transports = transports;
  } else {
    response.authenticatorData = toBase64url(r.authenticatorData);
    response.signature = toBase64url(r.signature);
    if (r.userHandle) response.userHandle = toBase64url(r.userHandle);
  }
  const json = {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response,
    clientExtensionResults: jsonable(credential.getClientExtensionResults()),
  };
  if (credential.authenticatorAttachment) json.authenticatorAttachment = credential.authenticatorAttachment;
  return json;
}

/** Runs a ceremony in the browser (`create` or `get`); the browser's refusals become
 * errors that say what happened, in the console's terms. */
async function ceremony(kind, publicKey) {
  if (passkeys() === "unsupported") {
    throw new ApiError(400, "passkey_unsupported",
      "This browser cannot use passkeys here (they need HTTPS, or localhost).");
  }
  let credential;
  try {
    credential = await navigator.credentials[kind]({ publicKey });
  } catch (e) {
    if (e?.name === "NotAllowedError" || e?.name === "AbortError") {
      throw new ApiError(400, "passkey_cancelled", "The passkey prompt was cancelled or timed out.");
    }
    if (e?.name === "InvalidStateError") {
      throw new ApiError(400, "passkey_on_authenticator",
        "This authenticator already holds a passkey for your account.");
    }
    if (e?.name === "SecurityError") {
      throw new ApiError(400, "passkey_wrong_site",
        `The browser refused: this page's address (${location.host}) does not fit the server's passkey settings (GATEHOUSE_WEBAUTHN_RP_ID, GATEHOUSE_WEBAUTHN_ORIGINS).`);
    }
    throw new ApiError(400, "passkey_failed", `The passkey did not work: ${e?.message ?? e}`);
  }
  if (!credential) {
    throw new ApiError(400, "passkey_cancelled", "The passkey prompt was cancelled or timed out.");
  }
  return credentialJson(credential);
}

/** Signs in with a discoverable passkey alone: the passkey names its user. */
export async function signInWithPasskey() {
  const { flow_id: flowId, options } = await passkeyCall(
    () => send("POST", "/v1/passkeys/login/options", {}));
  const credential = await ceremony("get", requestOptions(options));
  return adoptAdmin(await send("POST", "/v1/passkeys/login", { flow_id: flowId, credential }));
}

/** The second step of a sign-in with a passkey instead of a code. */
export async function signInWithPasskeyFactor(mfaToken) {
  const { flow_id: flowId, options } = await passkeyCall(
    () => send("POST", "/v1/login/mfa/webauthn/options", { mfa_token: mfaToken }));
  const credential = await ceremony("get", requestOptions(options));
  return adoptAdmin(await send("POST", "/v1/login/mfa",
    { mfa_token: mfaToken, flow_id: flowId, credential }));
}

/** The signed-in admin's passkeys; `passkeys_off` when the server has none. */
export async function myPasskeys() {
  return (await passkeyCall(() => api("GET", "/v1/me/passkeys"))).passkeys;
}

/** Registers a new passkey named `name` for the signed-in admin. */
export async function addPasskey(name) {
  const { flow_id: flowId, options } = await passkeyCall(
    () => api("POST", "/v1/me/passkeys/options", {}));
  const credential = await ceremony("create", creationOptions(options));
  return api("POST", "/v1/me/passkeys", { flow_id: flowId, name, credential });
}

async function adoptAdmin(tokens) {
  if (tokens.user.role !== "admin") {
    await send("POST", "/v1/logout", { refresh_token: tokens.refresh_token }).catch(() => {});
    throw new ApiError(403, "not_admin", "This account is not an admin.");
  }
  const replaced = session.refresh;
  adopt(tokens);
  if (replaced) await send("POST", "/v1/logout", { refresh_token: replaced }).catch(() => {});
  return tokens.user;
}

/** Revokes the session on the server, then forgets it here. */
export async function signOut(reason) {
  const refresh = session.refresh;
  forget();
  if (refresh) await send("POST", "/v1/logout", { refresh_token: refresh }).catch(() => {});
  listeners.signedOut(reason, "info");
}

/** Closing or leaving the tab: the tokens die with the page, and the session is revoked
 * with a request that outlives it. */
export function signOutOnUnload() {
  if (!session.refresh) return;
  fetch("/v1/logout", {
    method: "POST",
    keepalive: true,
    credentials: "omit",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  }).catch(() => {});
  forget();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An authenticated API call. An expired access token is refreshed once and the call
 * repeated; reads that meet 429/503 or a network failure are retried a few times while
 * the page says so. */
export async function api(method, path, body) {
  const attempts = method === "GET" ? 4 : 1;
  for (let attempt = 1; ; attempt++) {
    // Checked on every attempt: the admin may have signed out during a retry's wait.
    if (!session.access) throw new ApiError(401, "signed_out", "Signed out.");
    try {
      const result = await send(method, path, body, session.access);
      listeners.notice(null);
      return result;
    } catch (e) {
      if (e.status === 401 && e.code === "invalid_token" && attempt === 1) {
        await refreshNow();
        continue;
      }
      // Other 401s are about the body (a wrong password or code), not the session.
      if (e.status === 401 && e.code === "invalid_token") {
        end("Your session has ended (revoked or expired). Sign in again.");
        throw e;
      }
      // 403 `mfa_required`: this session has no second factor and the server wants one
      // for admin work; the page says so and offers the enrolment.
      if (e.status === 403 && e.code === "forbidden") {
        end("This account is not an admin (any more).");
        throw e;
      }
      const transient = e.status === 0 || e.status === 429 || e.status === 503;
      if (transient && attempt < attempts) {
        listeners.notice(e.status === 429
          ? "Rate limited, retrying…" : "Service unavailable, retrying…");
        await sleep(Math.min(e.retryAfter ?? 2, 10) * 1000);
        continue;
      }
      throw e;
    }
  }
}
