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
  signedOut: (reason) => {
    bar.hidden = true;
    location.hash = "#/sign-in";
    render();
    if (reason) notice(reason, "error");
  },
});

const routes = {
  "sign-in": () => pages.signIn(main, { onSignedIn }),
  overview: () => pages.overview(main),
  users: (q) => pages.users(main, q),
  user: (q, id) => pages.user(main, id, { notice }),
  audit: (q) => pages.audit(main, q),
};

function onSignedIn(user) {
  notice(null);
  fill(document.getElementById("who"), user.email);
  bar.hidden = false;
  location.hash = "#/overview";
}

function parse() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  return { name: name || "overview", args: rest.map(decodeURIComponent), query: new URLSearchParams(query) };
}

async function render() {
  let { name, args, query } = parse();
  if (!api.currentUser() || !routes[name]) name = api.currentUser() ? "overview" : "sign-in";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name || (name === "user" && link.dataset.nav === "users")) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  document.title = `gatehouse admin · ${name}`;
  try {
    await routes[name](query, ...args);
  } catch (e) {
    if (e.status === 401 || e.status === 403) return;
    fill(main, h("h1", {}, "Something went wrong"),
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
