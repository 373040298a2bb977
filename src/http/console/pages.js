// The pages. Each one renders into its own `view` element (see app.js) from API answers,
// as text only (see dom.js).

import * as api from "./api.js";
import { lineChart } from "./chart.js";
import { breakable, confirm, fill, h, table, text, when } from "./dom.js";

const KINDS = [
  "signup", "login_succeeded", "login_failed", "login_locked", "refresh_reuse_detected",
  "logout", "session_revoked", "password_changed", "account_deleted", "user_updated",
  "key_generated", "key_rotated", "key_retired", "key_adopted",
  "client_created", "client_deleted", "client_secret_rotated", "client_auth_failed", "client_auth_locked",
  "mfa_enrolment_started", "mfa_enabled", "mfa_disabled", "mfa_reset",
  "mfa_recovery_codes_regenerated", "mfa_recovery_code_used", "mfa_challenge_issued",
  "mfa_failed", "mfa_locked",
  "mail_queued", "mail_sent", "mail_failed", "email_verified", "password_reset_requested",
  "password_reset", "email_changed",
  "passkey_registered", "passkey_removed", "passkey_login", "passkey_failed",
];

const enc = encodeURIComponent;

function loading(view, title) {
  fill(view, h("h1", {}, title), h("p", { class: "muted", role: "status" }, "Loading…"));
}

// The API's field names, as the forms label them.
const FIELDS = {
  email: "Email", password: "Password", user_id: "User id",
  name: "Name", scopes: "Scopes", audience: "Audience",
};

/** A validation failure names each field and what is wrong with it ("Email is not a
 * valid email address"); anything else is its message. */
function explain(e) {
  if (!e.details?.length) return e.message;
  return h("ul", { class: "details" },
    e.details.map((d) => h("li", {}, `${FIELDS[d.field] ?? d.field} ${d.message}.`)));
}

function errorBox(e) {
  return h("div", { class: "error", role: "alert" },
    e.status === 503 || e.status === 0 || e.status === 429
      ? `Service unavailable, try again shortly (${e.message})`
      : explain(e));
}

// ------------------------------------------------------------------ sign in

/** What a failed sign-in step says. */
function signInMessage(e) {
  return e.code === "not_admin" ? "Not an admin: this console is for admins only."
    : e.code === "invalid_credentials" ? "Wrong email or password."
    : e.code === "invalid_mfa_code" ? "Wrong or already used code."
    : e.code === "invalid_mfa_token" ? "The sign-in took too long; enter your password again."
    : e.code === "invalid_passkey" ? "The server did not accept this passkey (unknown to it, removed, or not verified)."
    : e.code === "invalid_flow" ? "The passkey prompt took too long; try again."
    : e.code === "too_many_attempts" ? `Too many failed attempts; try again in ${e.retryAfter ?? "a few"} seconds.`
    : e.status === 503 || e.status === 0 ? "Service unavailable, try again shortly."
    : explain(e);
}

export function signIn(view, { onSignedIn }) {
  const error = h("div", { class: "error", role: "alert", id: "sign-in-error" });
  const button = h("button", { type: "submit" }, "Sign in");
  // Offered until the server says it has no passkeys (a 404, remembered for the page's
  // life): asking it before the admin does would open a ceremony on every visit.
  const offerPasskey = () => !["unsupported", "off"].includes(api.passkeys());
  const passkeyPart = h("div", { class: "alternative", id: "passkey-part" },
    h("p", { class: "muted" }, "or"),
    h("button", { type: "button", id: "passkey-sign-in", class: "secondary", onclick: () => attempt(api.signInWithPasskey) },
      "Sign in with a passkey"));
  const form = h("form", { class: "card sign-in", "aria-labelledby": "sign-in-title", novalidate: true },
    h("h1", { id: "sign-in-title" }, "gatehouse admin"),
    h("p", { class: "muted" }, "Sign in with an admin account."),
    h("label", { for: "email" }, "Email"),
    h("input", { id: "email", name: "email", type: "email", autocomplete: "username", required: true, autofocus: true }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    button, offerPasskey() ? passkeyPart : null, error);
  // Set once the password was right for an account with a second factor.
  let mfaToken = null;

  /** Back to the password: the second step's fields go, the passkey offer returns. */
  function firstStep() {
    mfaToken = null;
    form.querySelector("#second-step")?.remove();
    button.hidden = false;
    if (offerPasskey()) form.insertBefore(passkeyPart, error);
  }

  /** The password was right: a code field, a passkey button, or both, as `methods` says
   * (a server without `methods` asks for a code). */
  function secondStep(body) {
    mfaToken = body.mfa_token;
    const methods = Array.isArray(body.methods) ? body.methods : ["totp", "recovery_code"];
    const codes = methods.includes("totp") || methods.includes("recovery_code");
    const passkey = methods.includes("webauthn") && api.passkeys() !== "unsupported";
    passkeyPart.remove();
    const step = h("div", { id: "second-step", class: "second-step" });
    if (codes) {
      step.append(
        h("label", { for: "code" }, "Code from your authenticator app, or a recovery code"),
        h("input", { id: "code", name: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true }));
    }
    if (passkey) {
      step.append(
        codes ? h("p", { class: "muted" }, "or") : h("p", {}, "Confirm with your passkey."),
        h("button", { type: "button", id: "mfa-passkey", class: "secondary", onclick: () => attempt(() => api.signInWithPasskeyFactor(mfaToken)) },
          "Use a passkey"));
    }
    if (!codes && !passkey) {
      fill(error, "This account's second factor is a passkey, which this browser cannot use here (passkeys need HTTPS, or localhost).");
    }
    // With no code to type, Enter uses the passkey (see the submit handler).
    button.hidden = !codes;
    form.insertBefore(step, button);
    (form.code ?? step.querySelector("#mfa-passkey"))?.focus();
  }

  async function attempt(step) {
    fill(error);
    const buttons = [...form.querySelectorAll("button")];
    for (const b of buttons) b.disabled = true;
    try {
      const user = await step();
      form.password.value = "";
      onSignedIn(user);
    } catch (e) {
      form.password.value = "";
      if (e.code === "mfa_required" && e.body?.mfa_token) {
        secondStep(e.body);
        return;
      }
      // Expired or spent: start again from the password.
      if (e.code === "invalid_mfa_token") firstStep();
      if (e.code === "passkeys_off") passkeyPart.remove();
      fill(error, signInMessage(e));
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (mfaToken && !form.code) {
      if (form.querySelector("#mfa-passkey")) attempt(() => api.signInWithPasskeyFactor(mfaToken));
      return;
    }
    attempt(() => (mfaToken
      ? api.signInWithCode(mfaToken, form.code.value.trim())
      : api.signIn(form.email.value, form.password.value)));
  });
  fill(view, form);
  form.email.focus();
}

// ------------------------------------------------------------------ overview

const CHARTED = [
  { key: "login_succeeded", label: "Logins" },
  { key: "login_failed", label: "Failed logins" },
  { key: "login_locked", label: "Locked out" },
  { key: "refresh_reuse_detected", label: "Reuse detected" },
];

export async function overview(view) {
  loading(view, "Overview");
  const [keys, stats] = await Promise.allSettled([
    api.api("GET", "/v1/admin/keys"),
    api.api("GET", "/v1/admin/stats"),
  ]);
  // An admin session without a second factor, under GATEHOUSE_ADMIN_MFA=required: the
  // shell says so and offers the enrolment, instead of two failed sections.
  const needsMfa = [keys, stats].find((r) => r.status === "rejected" && r.reason?.code === "mfa_required");
  if (needsMfa) throw needsMfa.reason;
  const keySection = h("section", { "aria-labelledby": "keys-title" }, h("h2", { id: "keys-title" }, "Signing keys"));
  if (keys.status === "fulfilled") {
    keySection.append(table("Keys published in the JWKS, the signing key first",
      ["kid", "stage", "published since", "signs since", "retired", "leaves the JWKS"],
      keys.value.keys.map((k) => h("tr", { class: `stage-${k.stage}` },
        h("td", { class: "mono" }, k.kid),
        h("td", {}, h("span", { class: `badge ${k.stage}` }, k.stage), k.hand_placed ? h("span", { class: "badge warn" }, "hand-placed") : null),
        h("td", {}, when(k.published_at)),
        h("td", {}, when(k.activated_at)),
        h("td", {}, when(k.retired_at)),
        h("td", {}, when(k.unpublish_at)))),
      "No keys."));
  } else {
    keySection.append(errorBox(keys.reason));
  }
  const statSection = h("section", { "aria-labelledby": "stats-title" }, h("h2", { id: "stats-title" }, "Last 24 hours"));
  if (stats.status === "fulfilled") {
    const s = stats.value;
    const series = CHARTED.map((c) => ({ ...c, values: s.counts[c.key] }));
    const total = (values) => values.reduce((a, b) => a + b, 0);
    statSection.append(
      h("ul", { class: "legend" }, series.map((x) => h("li", {},
        h("span", { class: `swatch ${x.key}`, "aria-hidden": "true" }), `${x.label}: `, h("strong", {}, String(total(x.values)))))),
      lineChart(s.hours, series, "Logins, failed logins, lockouts and reuse detections per hour"),
      h("p", { class: "muted" },
        "Counted from the audit log, per hour. Successful refreshes are not audited; "
        + "see gatehouse_refreshes_total on /metrics."));
  } else {
    statSection.append(errorBox(stats.reason));
  }
  fill(view, h("h1", {}, "Overview"), statSection, keySection);
}

// ------------------------------------------------------------------ users

export async function users(view, query) {
  const q = query.get("email") ?? "";
  const results = h("div", { id: "results", "aria-live": "polite" });
  const form = h("form", { class: "search", role: "search" },
    h("label", { for: "user-search" }, "Email (exact or prefix)"),
    h("input", { id: "user-search", name: "email", type: "search", value: q, autocomplete: "off" }),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/users?email=${enc(form.email.value.trim())}`;
  });
  fill(view, h("h1", {}, "Users"), form, results);
  form.email.focus();
  fill(results, h("p", { class: "muted", role: "status" }, "Searching…"));
  try {
    const path = q ? `/v1/admin/users?limit=100&email=${enc(q)}` : "/v1/admin/users?limit=100";
    const body = await api.api("GET", path);
    fill(results, table(q ? `Users matching “${q}”` : "Newest users",
      ["email", "role", "status", "created", "last login"],
      body.users.map((u) => h("tr", {},
        h("td", {}, h("a", { href: `#/user/${enc(u.id)}` }, u.email)),
        h("td", {}, u.role),
        h("td", {}, u.disabled ? h("span", { class: "badge danger" }, "disabled") : "active"),
        h("td", {}, when(u.created_at)),
        h("td", {}, when(u.last_login_at)))),
      q ? `No user's email is or starts with “${q}”.` : "No users yet."));
  } catch (e) {
    fill(results, errorBox(e));
  }
}

// ------------------------------------------------------------------ one user

function sessionState(s) {
  if (s.revoked_at) return { live: false, label: `revoked (${s.revoked_reason ?? "unknown"})` };
  if (new Date(s.expires_at) <= new Date()) return { live: false, label: "expired" };
  return { live: true, label: "live" };
}

export async function user(view, id, { notice }) {
  loading(view, "User");
  let u;
  let sessions;
  try {
    [u, { sessions }] = await Promise.all([
      api.api("GET", `/v1/admin/users/${enc(id)}`),
      api.api("GET", `/v1/admin/users/${enc(id)}/sessions`),
    ]);
  } catch (e) {
    if (e.status === 404) {
      fill(view, h("h1", {}, "User"), h("p", { class: "empty" }, "No such user (deleted?)."),
        h("a", { href: "#/users" }, "Back to users"));
      return;
    }
    throw e;
  }
  // The user's passkeys, asked once the user is known to exist: a 404 then means the
  // server has no passkeys (null, no section); another failure is shown in the section.
  const keys = await api.api("GET", `/v1/admin/users/${enc(id)}/passkeys`)
    .then((b) => b.passkeys, (e) => (e.status === 404 ? null : e));
  const result = h("p", { id: "result", role: "status", "aria-live": "polite" });
  const me = api.currentUser();
  const self = me && me.id === u.id;

  async function act(title, message, actionLabel, method, path, body, done) {
    if (!(await confirm(title, message, actionLabel))) {
      fill(result, "Cancelled.");
      return;
    }
    try {
      await api.api(method, path, body);
      await user(view, id, { notice });
      // The page was drawn anew: its own result line, not one of whatever page shows now.
      // (None when the user was deleted meanwhile: the page then says so.)
      const redrawn = view.querySelector("#result");
      if (redrawn) {
        fill(redrawn, done);
        redrawn.className = "ok";
      }
    } catch (e) {
      fill(result, errorBox(e));
    }
  }

  const anyLive = sessions.some((s) => sessionState(s).live);
  const actions = h("div", { class: "actions" },
    h("button", {
      type: "button", id: "toggle-disabled", class: u.disabled ? "" : "danger", disabled: self,
      onclick: () => act(u.disabled ? "Enable user" : "Disable user",
        u.disabled ? `Let ${u.email} log in again? Revoked sessions stay revoked.`
          : `Disable ${u.email}? Every session is revoked and logins are refused. Access tokens already issued stay valid for other services until they expire.`,
        u.disabled ? "Enable" : "Disable",
        "PATCH", `/v1/admin/users/${enc(id)}`, { disabled: !u.disabled },
        `${u.email} is now ${u.disabled ? "enabled" : "disabled"}.`),
    }, u.disabled ? "Enable" : "Disable"),
    h("button", {
      type: "button", id: "toggle-role", disabled: self,
      onclick: () => act(u.role === "admin" ? "Demote to user" : "Promote to admin",
        `${u.role === "admin" ? "Demote" : "Promote"} ${u.email}?`,
        u.role === "admin" ? "Demote" : "Promote",
        "PATCH", `/v1/admin/users/${enc(id)}`, { role: u.role === "admin" ? "user" : "admin" },
        `${u.email} is now ${u.role === "admin" ? "a user" : "an admin"}.`),
    }, u.role === "admin" ? "Demote to user" : "Promote to admin"),
    h("button", {
      type: "button", id: "revoke-all", class: "danger",
      disabled: !anyLive, title: anyLive ? undefined : "No live session to revoke",
      onclick: () => act("Revoke every session", `Revoke every session of ${u.email}? Their refresh tokens stop at once; access tokens already issued stay valid for other services until they expire.`,
        "Revoke all", "DELETE", `/v1/admin/users/${enc(id)}/sessions`, undefined,
        `Every session of ${u.email} is revoked.`),
    }, "Revoke all sessions"),
    h("button", {
      type: "button", id: "reset-mfa", class: "danger",
      disabled: !u.mfa_enabled, title: u.mfa_enabled ? undefined : "No second factor to reset",
      onclick: () => act("Reset second factor", `Remove the second factor (${keys === null ? "TOTP and recovery codes" : "TOTP, recovery codes and passkeys"}) of ${u.email}? Every session of theirs is revoked; they log in with their password alone and may enrol again.`,
        "Reset", "DELETE", `/v1/admin/users/${enc(id)}/mfa`, undefined,
        `The second factor of ${u.email} is removed.`),
    }, "Reset second factor"),
    // With mail off the server answers 404, which the result line says in words.
    h("button", {
      type: "button", id: "send-reset",
      disabled: u.disabled, title: u.disabled ? "A disabled user gets no mail" : undefined,
      onclick: () => act("Send reset mail", `Mail ${u.email} a link to choose a new password? Their password and sessions stay as they are until they use it.`,
        "Send", "POST", `/v1/admin/users/${enc(id)}/password-reset`, {},
        `A reset mail to ${u.email} is on its way.`),
    }, "Send reset mail"),
    h("a", { href: `#/audit?user_id=${enc(id)}`, class: "button" }, "Audit entries"));

  // The server's order, kept: the times shown are to the second, too coarse to order two
  // logins in one second, so re-sorting by them would shuffle the newest.
  const rows = sessions.map((s) => {
    const state = sessionState(s);
    return h("tr", { class: state.live ? "live" : "ended", "data-session": s.id },
      h("td", {}, h("span", { class: `badge ${state.live ? "ok" : "muted"}` }, state.label),
        s.revoked_at ? h("div", { class: "when" }, when(s.revoked_at)) : null),
      h("td", { class: "ua" }, text(s.user_agent)),
      h("td", { class: "mono" }, text(s.ip)),
      h("td", {}, when(s.created_at)),
      h("td", {}, when(s.last_used_at)),
      h("td", {}, when(s.expires_at)),
      h("td", {}, state.live ? h("button", {
        type: "button", class: "danger small", "aria-label": `Revoke session from ${s.user_agent ?? "unknown device"}`,
        onclick: () => act("Revoke session", `Revoke this session of ${u.email} (${s.user_agent ?? "unknown device"}, ${s.ip ?? "unknown IP"})?`,
          "Revoke", "DELETE", `/v1/admin/sessions/${enc(s.id)}`, undefined, "The session is revoked."),
      }, "Revoke") : ""));
  });

  let passkeys = null;
  if (keys instanceof Error) {
    passkeys = [h("h2", {}, "Passkeys"), errorBox(keys)];
  } else if (keys) {
    passkeys = [h("h2", {}, "Passkeys"),
      h("div", { id: "user-passkeys" }, table("Passkeys, oldest first", ["name", "created", "last used", ""],
        keys.map((k) => h("tr", { "data-passkey": k.id },
          h("td", { class: "passkey-name" }, k.name),
          h("td", {}, when(k.created_at)),
          h("td", {}, when(k.last_used_at)),
          h("td", {}, h("button", {
            type: "button", class: "danger small", "aria-label": `Remove passkey ${k.name}`,
            onclick: () => act("Remove passkey", `Remove the passkey “${k.name}” of ${u.email}? It stops signing them in at once; their sessions stay as they are.`,
              "Remove", "DELETE", `/v1/admin/users/${enc(id)}/passkeys/${enc(k.id)}`, undefined,
              `The passkey “${k.name}” of ${u.email} is removed.`),
          }, "Remove")))),
        "No passkeys."))];
  }

  fill(view,
    h("p", {}, h("a", { href: "#/users" }, "← Users")),
    h("h1", {}, breakable(u.email)),
    h("dl", { class: "facts" },
      h("dt", {}, "Role"), h("dd", { id: "role" }, u.role),
      h("dt", {}, "Status"), h("dd", { id: "status" }, u.disabled ? h("span", { class: "badge danger" }, "disabled") : "active"),
      h("dt", {}, "Second factor"), h("dd", { id: "mfa" }, u.mfa_enabled ? "on" : "off"),
      h("dt", {}, "Email"), h("dd", { id: "email-verified" }, u.email_verified ? "verified" : h("span", { class: "badge muted" }, "not verified")),
      h("dt", {}, "Created"), h("dd", {}, when(u.created_at)),
      h("dt", {}, "Last login"), h("dd", {}, when(u.last_login_at)),
      h("dt", {}, "Id"), h("dd", { class: "mono" }, u.id)),
    self ? h("p", { class: "muted" }, "This is you: you cannot disable or demote yourself.") : null,
    actions, result,
    passkeys,
    h("h2", {}, "Sessions"),
    table("Sessions, newest first (live and ended)",
      ["state", "device (user agent)", "IP", "created", "last used", "expires", ""],
      rows, "No sessions.", "sessions"));
}

// ------------------------------------------------------------------ audit log

const PAGE = 50;

// Emails by user id, for the audit log, which names users by id only. Most pages name the
// same few users, so answers are kept (a bounded number, dropped at sign-out).
const names = new Map();
const NAMES_KEPT = 500;

export function forgetNames() {
  names.clear();
}

/** The email of user `id`, null when the user is deleted, undefined when unknown now. */
function nameOf(id) {
  if (!names.has(id)) {
    if (names.size >= NAMES_KEPT) names.delete(names.keys().next().value);
    names.set(id, api.api("GET", `/v1/admin/users/${enc(id)}`).then((u) => u.email, (e) => {
      if (e.status === 404) return null;
      names.delete(id);
      return undefined;
    }));
  }
  return names.get(id);
}

/** A cell naming a user: the id's start at first, then the email, linked to their page. */
function userCell(id) {
  const cell = h("td", { class: "mono" });
  if (!id) return fill(cell, text(null));
  fill(cell, h("a", { href: `#/user/${enc(id)}`, title: id }, id.slice(0, 8)));
  cell.dataset.userId = id;
  return cell;
}

/** Fills in the emails of the users `view` names, a few requests at a time (the rate
 * limit on reads is shared with the rest of the console), while `view` is shown. */
async function nameUsers(view) {
  const cells = [...view.querySelectorAll("td[data-user-id]")];
  const queue = [...new Set(cells.map((c) => c.dataset.userId))];
  const worker = async () => {
    while (queue.length && view.isConnected) {
      const id = queue.shift();
      const email = await nameOf(id);
      for (const cell of cells.filter((c) => c.dataset.userId === id)) {
        if (email) {
          cell.className = "";
          fill(cell, h("a", { href: `#/user/${enc(id)}`, title: id }, breakable(email)));
        } else if (email === null) {
          fill(cell, h("span", { title: id }, id.slice(0, 8)), " ", h("span", { class: "muted" }, "(deleted)"));
        }
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

export async function audit(view, query) {
  const userId = query.get("user_id") ?? "";
  const kind = query.get("type") ?? "";
  const before = query.get("before") ?? "";
  const form = h("form", { class: "search", role: "search" },
    h("label", { for: "audit-user" }, "User id"),
    h("input", { id: "audit-user", name: "user_id", value: userId, placeholder: "any user", autocomplete: "off" }),
    h("label", { for: "audit-type" }, "Event"),
    h("select", { id: "audit-type", name: "type" },
      h("option", { value: "" }, "any event"),
      KINDS.map((k) => h("option", { value: k, selected: k === kind }, k))),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (form.user_id.value.trim()) q.set("user_id", form.user_id.value.trim());
    if (form.type.value) q.set("type", form.type.value);
    location.hash = `#/audit?${q}`;
  });
  const results = h("div", { id: "results", "aria-live": "polite" }, h("p", { class: "muted", role: "status" }, "Loading…"));
  fill(view, h("h1", {}, "Audit log"), form, results);

  const q = new URLSearchParams({ limit: String(PAGE) });
  if (userId) q.set("user_id", userId);
  if (kind) q.set("type", kind);
  if (before) q.set("before", before);
  let events;
  try {
    ({ events } = await api.api("GET", `/v1/admin/audit?${q}`));
  } catch (e) {
    fill(results, errorBox(e));
    return;
  }
  const pager = new URLSearchParams();
  if (userId) pager.set("user_id", userId);
  if (kind) pager.set("type", kind);
  const nav = h("nav", { class: "pager", "aria-label": "Pages" },
    before ? h("a", { href: `#/audit?${pager}`, class: "button" }, "Newest") : null,
    events.length === PAGE
      ? h("a", { href: `#/audit?${new URLSearchParams([...pager, ["before", String(events[events.length - 1].id)]])}`, class: "button", id: "older" }, "Older →")
      : null);
  const reuse = events.filter((e) => e.type === "refresh_reuse_detected").length;
  fill(results,
    reuse ? h("p", { class: "alert", role: "alert" }, `${reuse} refresh-token reuse detection${reuse > 1 ? "s" : ""} on this page: a token was replayed, possibly stolen.`) : null,
    table("Audit events, newest first",
      ["time", "event", "outcome", "user", "actor", "IP", "user agent", "detail"],
      events.map((e) => h("tr", { class: e.type === "refresh_reuse_detected" ? "reuse" : "" , "data-event": e.id },
        h("td", {}, when(e.at)),
        h("td", {}, e.type === "refresh_reuse_detected"
          ? h("strong", { class: "badge danger" }, "⚠ reuse detected") : e.type),
        h("td", {}, e.outcome),
        userCell(e.user_id),
        userCell(e.actor_id),
        h("td", { class: "mono" }, text(e.ip)),
        h("td", { class: "ua" }, text(e.user_agent)),
        h("td", {}, e.family_id
          ? [`session ${e.family_id.slice(0, 8)}`, e.detail ? `: ${e.detail}` : ""]
          : text(e.detail)))),
      before ? "No older events." : "No events match."),
    nav);
  await nameUsers(view);
}

// ------------------------------------------------------------------ service clients

export async function clients(view) {
  const list = h("div", { id: "clients", "aria-live": "polite" });
  const shown = h("div", { id: "client-secret", "aria-live": "polite" });
  const error = h("div", { class: "error", role: "alert", id: "client-error" });
  const button = h("button", { type: "submit" }, "Create client");
  const form = h("form", { class: "card new-client", "aria-labelledby": "new-client", novalidate: true },
    h("h2", { id: "new-client" }, "New client"),
    h("label", { for: "client-name" }, "Name"),
    h("input", { id: "client-name", name: "name", required: true, autocomplete: "off" }),
    h("label", { for: "client-scopes" }, "Scopes, space-separated (introspect, revocations, …)"),
    h("input", { id: "client-scopes", name: "scopes", autocomplete: "off" }),
    h("label", { for: "client-audience" }, "Audience (empty: the audience of user tokens)"),
    h("input", { id: "client-audience", name: "audience", autocomplete: "off" }),
    button, error);

  // A secret is in one answer only: shown until the page is left, with what it is for.
  function showSecret(title, clientId, secret) {
    fill(shown, h("div", { class: "card", role: "status" },
      h("h2", {}, title),
      h("p", {}, "Copy the secret now: gatehouse shows it this once and keeps only its hash."),
      h("p", {}, "client_id ", h("code", { id: "shown-client-id" }, clientId)),
      h("p", {}, "client_secret ", h("code", { id: "shown-secret" }, secret))));
  }

  async function act(title, message, label, method, path, then) {
    if (!(await confirm(title, message, label))) return;
    try {
      const body = await api.api(method, path);
      // The list first, then the outcome: what the outcome shows is then on the list.
      await load();
      then(body);
    } catch (e) {
      fill(error, errorBox(e));
    }
  }

  async function load() {
    const body = await api.api("GET", "/v1/admin/clients");
    fill(list, table("Service clients",
      ["name", "client id", "scopes", "audience", "created", "last used", ""],
      body.clients.map((c) => h("tr", {},
        h("td", {}, c.name),
        h("td", {}, h("code", {}, breakable(c.client_id))),
        h("td", {}, text(c.scopes.join(" "))),
        h("td", {}, text(c.audience)),
        h("td", {}, when(c.created_at)),
        h("td", {}, when(c.last_used_at)),
        h("td", {},
          h("button", {
            type: "button",
            onclick: () => act("New secret", `Give ${c.name} a new secret? The old one keeps working for the configured overlap.`,
              "New secret", "POST", `/v1/admin/clients/${enc(c.client_id)}/secret`,
              (s) => showSecret(`New secret for ${c.name}`, s.client_id, s.client_secret)),
          }, "New secret"),
          " ",
          h("button", {
            type: "button", class: "danger",
            onclick: () => act("Delete client", `Delete ${c.name}? Its tokens stop introspecting as active at once.`,
              "Delete", "DELETE", `/v1/admin/clients/${enc(c.client_id)}`, () => fill(shown)),
          }, "Delete")))),
      "No service clients yet."));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(error);
    button.disabled = true;
    try {
      const audience = form.audience.value.trim();
      const made = await api.api("POST", "/v1/admin/clients", {
        name: form.name.value,
        scopes: form.scopes.value.split(/\s+/).filter(Boolean),
        ...(audience ? { audience } : {}),
      });
      form.reset();
      await load();
      showSecret(`Client ${made.name} created`, made.client_id, made.client_secret);
    } catch (e) {
      fill(error, errorBox(e));
    } finally {
      button.disabled = false;
    }
  });

  fill(view, h("h1", {}, "Service clients"), shown, form, list);
  fill(list, h("p", { class: "muted", role: "status" }, "Loading…"));
  await load();
}

// ------------------------------------------------------------------ second factor

/** The signed-in admin's own second factor: enrol TOTP (the secret and the otpauth URI
 * to type or paste into an authenticator app, and its QR code), confirm with a code, and
 * see the recovery codes once; and their passkeys, unless the server has none. */
export async function mfa(view) {
  loading(view, "Second factor");
  const [me, keys] = await Promise.all([
    api.api("GET", "/v1/me"),
    // null: the server has no passkeys (404); an error is shown in the section.
    api.myPasskeys().catch((e) => (e.code === "passkeys_off" ? null : e)),
  ]);
  const totp = h("section", { id: "totp", "aria-labelledby": "totp-title" });
  fill(view, h("h1", {}, "Second factor"), totp, keys === null ? null : passkeySection(keys));
  // `mfa_enabled` is also true for passkeys alone, and /v1/me does not say whether TOTP is
  // on: told apart by the recovery codes, which only TOTP gives. (TOTP on with every code
  // used and a passkey reads as off; starting an enrolment then says it is on.)
  const totpOn = me.mfa_enabled
    && !(Array.isArray(keys) && keys.length > 0 && me.recovery_codes_left === 0);
  totpPart(totp, me, totpOn);
}

function totpTitle() {
  return h("h2", { id: "totp-title" }, "Authenticator app");
}

function totpPart(totp, me, on) {
  if (on) {
    fill(totp, totpTitle(),
      h("p", { id: "mfa-state" }, `On: sign-ins ask for a code. Recovery codes left: ${me.recovery_codes_left}.`));
    return;
  }
  const result = h("div", { id: "mfa-result", role: "status", "aria-live": "polite" });
  const start = h("form", { class: "card", id: "mfa-start", novalidate: true },
    h("p", {}, "Sign-ins will ask for a code from an authenticator app. Confirm with your password to start."),
    h("label", { for: "mfa-password" }, "Password"),
    h("input", { id: "mfa-password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    h("button", { type: "submit" }, "Start"), result);
  start.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(result);
    try {
      const enrolment = await api.api("POST", "/v1/me/mfa/totp", { password: start.password.value });
      start.password.value = "";
      confirmStep(totp, enrolment);
    } catch (e) {
      start.password.value = "";
      fill(result, e.code === "invalid_credentials" ? "Wrong password."
        : e.code === "mfa_already_enabled" ? "An authenticator app is on already, with no recovery codes left; to start again, turn it off first (or have another admin reset it)."
        : errorBox(e));
    }
  });
  fill(totp, totpTitle(), h("p", { id: "mfa-state" }, "Off."), start);
}

/** A passkey's name as the server takes it: 1 to 64 characters after trimming, no
 * control characters. Checked before the ceremony, so a refused name does not leave a
 * passkey on the authenticator that the server never stored. */
function passkeyNameProblem(name) {
  if (!name) return "Name: give the passkey a name (which device or key holds it).";
  if ([...name].length > 64) return "Name is at most 64 characters.";
  if (/\p{Cc}/u.test(name)) return "Name cannot hold control characters.";
  return null;
}

function passkeyMessage(e) {
  return e.code === "invalid_flow" ? "The passkey prompt took too long; add it again."
    : e.code === "invalid_passkey" ? `The server refused the new passkey: ${e.message}`
    : errorBox(e);
}

/** The admin's passkeys: the list (name, created, last used, Delete) and Add passkey. */
function passkeySection(keys) {
  const list = h("div", { id: "passkeys", "aria-live": "polite" });
  const result = h("p", { id: "passkey-result", role: "status", "aria-live": "polite" });
  const error = h("div", { class: "error", role: "alert", id: "passkey-error" });
  const supported = api.passkeys() !== "unsupported";
  const name = h("input", { id: "passkey-name", name: "name", maxlength: 64, required: true, autocomplete: "off", disabled: !supported });
  const button = h("button", { type: "submit", disabled: !supported }, "Add passkey");
  const form = h("form", { class: "card new-passkey", id: "passkey-add", novalidate: true },
    h("label", { for: "passkey-name" }, "Name of the new passkey (which device or key holds it)"),
    name,
    supported ? null : h("p", { class: "muted" }, "This browser cannot create passkeys here: they need HTTPS, or localhost."),
    button, error);

  function draw(passkeys) {
    fill(list, table("Your passkeys, oldest first", ["name", "created", "last used", ""],
      passkeys.map((k) => h("tr", { "data-passkey": k.id },
        h("td", { class: "passkey-name" }, k.name),
        h("td", {}, when(k.created_at)),
        h("td", {}, when(k.last_used_at)),
        h("td", {}, h("button", {
          type: "button", class: "danger small", "aria-label": `Delete passkey ${k.name}`,
          onclick: () => remove(k),
        }, "Delete")))),
      "No passkeys yet."));
  }

  function done(message) {
    fill(result, message);
    result.className = "ok";
  }

  async function remove(k) {
    if (!(await confirm("Delete passkey", `Delete the passkey “${k.name}”? It stops signing you in at once; your authenticator may keep offering it until you remove it there too.`, "Delete"))) return;
    fill(error);
    fill(result);
    try {
      await api.api("DELETE", `/v1/me/passkeys/${enc(k.id)}`);
      draw(await api.myPasskeys());
      done(`The passkey “${k.name}” is deleted.`);
    } catch (e) {
      fill(error, errorBox(e));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(error);
    fill(result);
    const wanted = name.value.trim();
    const problem = passkeyNameProblem(wanted);
    if (problem) {
      fill(error, problem);
      name.focus();
      return;
    }
    button.disabled = true;
    try {
      const made = await api.addPasskey(wanted);
      form.reset();
      // The list first, then the outcome: what the outcome names is then on the list.
      draw(await api.myPasskeys());
      done(`Passkey “${made.name}” added: you can sign in with it alone.`);
    } catch (e) {
      fill(error, passkeyMessage(e));
    } finally {
      button.disabled = false;
    }
  });

  if (keys instanceof Error) fill(list, errorBox(keys));
  else draw(keys);
  return h("section", { id: "passkeys-section", "aria-labelledby": "passkeys-title" },
    h("h2", { id: "passkeys-title" }, "Passkeys"),
    h("p", { class: "muted" }, "A passkey signs you in without a password, or confirms a password sign-in instead of a code."),
    list, result, form);
}

/** The server's SVG of the otpauth URI as an element of the page. Parsed as an SVG
 * document (not HTML), so nothing in it runs; nothing when the server sent none. */
function qrImage(svgText) {
  if (!svgText) return "";
  const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") return "";
  svg.setAttribute("id", "totp-qr");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code of the key for an authenticator app");
  return h("div", { class: "qr" }, document.importNode(svg, true));
}

function confirmStep(totp, enrolment) {
  const result = h("div", { id: "mfa-result", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "card", id: "mfa-confirm", novalidate: true },
    h("p", {}, "Scan the code with your authenticator app (or type the secret), then enter the code it shows."),
    qrImage(enrolment.otpauth_qr_svg),
    h("dl", { class: "facts" },
      h("dt", {}, "Secret"), h("dd", { id: "totp-secret", class: "mono" }, enrolment.secret),
      h("dt", {}, "URI"), h("dd", { id: "otpauth-uri", class: "mono" }, breakable(enrolment.otpauth_uri))),
    h("label", { for: "mfa-code" }, "Code"),
    h("input", { id: "mfa-code", name: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true }),
    h("button", { type: "submit" }, "Turn on"), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(result);
    try {
      const { recovery_codes: codes } = await api.api("POST", "/v1/me/mfa/totp/confirm", { code: form.code.value.trim() });
      fill(totp, totpTitle(),
        h("p", { id: "mfa-state" }, "On. Keep these recovery codes somewhere safe: each signs in once without the app, and they are not shown again."),
        h("ul", { id: "recovery-codes", class: "mono" }, ...codes.map((c) => h("li", {}, c))));
    } catch (e) {
      fill(result, e.code === "invalid_mfa_code" ? "Wrong code; try the next one the app shows." : errorBox(e));
    }
  });
  fill(totp, totpTitle(), form);
  form.code.focus();
}
