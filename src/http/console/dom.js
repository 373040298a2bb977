// Building the page. Every value from the API goes in as a text node, never as HTML, so
// an email or user agent holding markup is shown, not run.

/** An element: `attrs` are attributes (`on*` functions become listeners), `children`
 * strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the contents of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An email (or any address) that wraps after a dot, @, hyphen or underscore rather than
 * mid-word: a long one in a heading breaks where a reader expects it to. */
export function breakable(value) {
  return String(value).split(/(?<=[.@_-])/).flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}

/** A time as the operator reads it: local, to the second, with the UTC value on hover. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const t = new Date(iso);
  return h("time", { datetime: iso, title: iso }, t.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }));
}

export function text(value) {
  return value === null || value === undefined || value === ""
    ? h("span", { class: "muted" }, "—")
    : String(value);
}

/** A table with a caption, header row and rows; `empty` when there are no rows. */
export function table(caption, headers, rows, empty, cls) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h("div", { class: "scroll" },
    h("table", { class: cls },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows)));
}

/** Asks for confirmation in the page's dialog; resolves true when confirmed. */
export function confirm(title, message, action = "Confirm") {
  const dialog = document.getElementById("confirm");
  fill(document.getElementById("confirm-title"), title);
  fill(document.getElementById("confirm-text"), message);
  fill(document.getElementById("confirm-ok"), action);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}
