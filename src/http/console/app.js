// The console's shell: sign-in state, navigation by URL fragment, and the banner.

import * as api from "./api.js";
import { fill, h } from "./dom.js";
import * as pages from "./pages.js";

const main = document.getElementById("main");
const bar = document.getElementById("bar");
const banner = document.getElementById("banner");

function notice(message, kind = "info") {
  banner.hidden = !message;
  banner.className = `banner ${kind}`;
  fill(banner, message ?? "");
}

api.configure({
  notice: (m) => notice(m, "warn"),
  // The URL stays as it was, so signing in again returns to the same page.
  signedOut: (reason, kind) => {
    bar.hidden = true;
    pages.forgetNames();
    render();
    if (reason) notice(reason, kind);
  },
});

const routes = {
  "sign-in": (view) => pages.signIn(view, { onSignedIn }),
  overview: (view) => pages.overview(view),
  users: (view, q) => pages.users(view, q),
  user: (view, q, id) => pages.user(view, id, { notice }),
  audit: (view, q) => pages.audit(view, q),
  clients: (view) => pages.clients(view),
  mfa: (view) => pages.mfa(view),
};

function onSignedIn(user) {
  notice(null);
  fill(document.getElementById("who"), user.email);
  bar.hidden = false;
  render();
}

function parse() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  return { name: name || "overview", args: rest.map(decodeURIComponent), query: new URLSearchParams(query) };
}

async function render() {
  const { args, query } = parse();
  let { name } = parse();
  if (api.currentUser() && (name === "sign-in" || !Object.hasOwn(routes, name))) {
    // Signed in, the sign-in form never shows; replacing the entry keeps Back from
    // returning to it. The hashchange renders the overview.
    location.replace("#/overview");
    return;
  }
  if (!api.currentUser()) name = "sign-in";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name || (name === "user" && link.dataset.nav === "users")) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  document.title = `gatehouse admin · ${name}`;
  // Every render draws into an element of its own. A page still waiting for an answer
  // when the admin moves on keeps drawing into its element, which is no longer in the
  // document: a late answer can never paint over the page now shown.
  const view = h("div", { class: "view" });
  fill(main, view);
  try {
    await routes[name](view, query, ...args);
  } catch (e) {
    if (e.status === 403 && e.code === "mfa_required") {
      fill(view, h("h1", {}, "Second factor required"),
        h("p", { class: "error", role: "alert" }, "Admin work needs a session opened with a second factor. Enrol one (an authenticator app or a passkey), then sign out and in again with it."),
        h("a", { href: "#/mfa", class: "button" }, "Set up a second factor"));
      return;
    }
    if (e.status === 401 || e.status === 403) return;
    fill(view, h("h1", {}, "Something went wrong"),
      h("p", { class: "error", role: "alert" }, e.message || String(e)),
      h("button", { type: "button", onclick: render }, "Try again"));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api.signOut("Signed out.");
});
addEventListener("pagehide", () => api.signOutOnUnload());
// Focus moves to the new page first (screen readers announce it), then a page may move
// it on to its first field.
addEventListener("hashchange", () => {
  main.focus();
  render();
});
render();
