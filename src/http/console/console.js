// The operator console: log in (replacing a one-time password first), then
// the handoff queue beside the open conversation, and the review queue of
// bot replies, kept current by the server's event stream. Server text only
// ever goes into the page through textContent (see el()): customers'
// messages are untrusted.
"use strict";

const $ = (id) => document.getElementById(id);
const page = document.body;
const views = { login: $("login-view"), password: $("password-view"), console: $("console-view") };

let csrf = null;
let openId = null; // the conversation in the right-hand pane
let conv = null; // its last rendered view
let tab = "queue";
let events = null;

/** An element with a class and text, built without parsing any HTML. */
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function timeEl(at) {
  const d = new Date(at);
  let text = at;
  if (!Number.isNaN(d.getTime())) {
    text = d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }
  const t = el("time", "at", text);
  t.dateTime = at;
  return t;
}

function waited(secs) {
  if (secs < 60) return "waiting " + Math.max(0, Math.floor(secs)) + " s";
  const min = Math.floor(secs / 60);
  if (min < 60) return "waiting " + min + " min";
  return "waiting " + Math.floor(min / 60) + " h " + (min % 60) + " min";
}

const WHO = { user: "customer", assistant: "bot", system: "system" };

/** Shows (or, with no message, clears) a loading error from `source`. */
function status(source, message) {
  const s = $("status");
  if (message) {
    s.textContent = message;
    s.dataset.source = source;
  } else if (s.dataset.source === source) {
    s.textContent = "";
  }
}

/** Adds the "nothing here" paragraph after `list`, or removes it. */
function setEmpty(list, id, text, empty) {
  const p = $(id);
  if (empty && !p) {
    const e = el("p", "empty", text);
    e.id = id;
    list.after(e);
  } else if (!empty && p) {
    p.remove();
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET `path` under /console/api/, or POST `body` to it. */
async function api(path, body) {
  const init = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    if (path !== "login") init.headers["X-CSRF-Token"] = csrf || "";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch("/console/api/" + path, init);
  } catch {
    throw new ApiError(0, "The server cannot be reached.");
  }
  const data = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (r.ok) return data;
  // The session ended (expiry, a restart): back to the login form.
  if (r.status === 401 && path !== "login" && path !== "me") {
    showLogin("Your session has ended; log in again.");
  }
  throw new ApiError(r.status, data.error || "The request failed (" + r.status + ").");
}

/** Runs `fn` with `button` disabled; its error goes into `error`. */
async function act(button, error, fn) {
  button.disabled = true;
  error.textContent = "";
  try {
    await fn();
    return true;
  } catch (e) {
    error.textContent = e.message;
    return false;
  } finally {
    button.disabled = false;
  }
}

// ---- views ----------------------------------------------------------------

function show(name) {
  for (const [k, v] of Object.entries(views)) v.hidden = k !== name;
}

function showLogin(message) {
  if (events) events.close();
  events = null;
  csrf = null;
  pending.queue = pending.conv = pending.review = false;
  closeConversation();
  $("queue").replaceChildren();
  $("review").replaceChildren();
  setEmpty($("queue"), "queue-empty", "", false);
  setEmpty($("review"), "review-empty", "", false);
  $("status").textContent = "";
  delete page.dataset.live;
  $("login-password").value = "";
  $("login-error").textContent = message || "";
  show("login");
  page.dataset.view = "login";
  ($("login-name").value ? $("login-password") : $("login-name")).focus();
}

function enter(me) {
  csrf = me.csrf;
  return me.must_change ? showPassword(me) : showConsole(me);
}

function showPassword(me) {
  delete page.dataset.view;
  $("password-who").textContent = me.name;
  $("password-user").value = me.name; // lets a password manager file the new password
  $("old-password").value = "";
  $("new-password").value = "";
  $("password-error").textContent = "";
  show("password");
  page.dataset.view = "password";
  $("old-password").focus();
}

async function showConsole(me) {
  delete page.dataset.view;
  $("me").textContent = me.name;
  page.dataset.live = "0";
  show("console");
  showTab("queue");
  await load({ queue: true });
  if (views.console.hidden) return; // logged out meanwhile
  connect();
  page.dataset.view = "console";
}

function showTab(name) {
  tab = name;
  for (const t of ["queue", "review"]) {
    $("tab-" + t).setAttribute("aria-selected", String(t === name));
    $(t + "-pane").hidden = t !== name;
  }
  if (name === "review") load({ review: true });
}

// ---- loading --------------------------------------------------------------

// Loads run one at a time and requests made meanwhile are merged, so an old
// response never overwrites a newer one. The conversation goes first: by the
// time the queue shows a claim, the pane already lets its holder reply.
const pending = { queue: false, conv: false, review: false };
let loading = null;

function load(what) {
  for (const k of Object.keys(pending)) pending[k] ||= Boolean(what[k]);
  loading ||= (async () => {
    try {
      while (pending.queue || pending.conv || pending.review) {
        const now = { ...pending };
        pending.queue = pending.conv = pending.review = false;
        if (now.conv) await loadConversation();
        if (now.queue) await loadQueue();
        if (now.review) await loadReview();
      }
    } finally {
      loading = null;
    }
  })();
  return loading;
}

const redact = () => ($("redact-toggle").checked ? 1 : 0);

async function loadQueue() {
  try {
    renderQueue((await api("queue?redact=" + redact())).conversations);
    status("queue");
  } catch (e) {
    if (e.status !== 401) status("queue", "Could not load the queue: " + e.message);
  }
}

async function loadConversation() {
  const id = openId;
  if (!id) return;
  try {
    const c = await api("conversations/" + encodeURIComponent(id) + "?redact=" + redact());
    if (id === openId) renderConversation(c);
    status("conversation");
  } catch (e) {
    if (e.status !== 401) status("conversation", "Could not load the conversation: " + e.message);
  }
}

async function loadReview() {
  try {
    renderReview((await api("review")).items);
    status("review");
  } catch (e) {
    if (e.status !== 401) status("review", "Could not load the review queue: " + e.message);
  }
}

function connect() {
  if (events) events.close();
  const es = new EventSource("/console/api/events");
  events = es;
  es.onopen = () => {
    page.dataset.live = "1";
  };
  es.onerror = () => {
    if (es !== events) return;
    page.dataset.live = "0";
    // The browser retries a dropped stream by itself, but not one the server
    // refused (the session ended): check the session, then start over.
    if (es.readyState === EventSource.CLOSED) setTimeout(() => recheck(es), 5000);
  };
  es.onmessage = (e) => {
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    // "hello" on each (re)connect and "resync" after a lag: events may have been missed.
    const all = ev.kind === "hello" || ev.kind === "resync";
    load({
      queue: true,
      conv: all || ev.conversation === openId,
      review: tab === "review" || ev.kind === "reviewed",
    });
  };
}

async function recheck(es) {
  if (es !== events) return;
  try {
    csrf = (await api("me")).csrf;
    connect();
  } catch (e) {
    if (e.status === 401) showLogin("Your session has ended; log in again.");
    else setTimeout(() => recheck(es), 5000);
  }
}

// ---- queue ----------------------------------------------------------------

function renderQueue(list) {
  const ul = $("queue");
  // The same <li> for the same conversation: a live update must not pull
  // the element out from under a click.
  const old = new Map([...ul.children].map((li) => [li.dataset.id, li]));
  ul.replaceChildren(...list.map((c) => {
    const li = old.get(c.id) || el("li", "conv");
    li.dataset.id = c.id;
    li.dataset.state = c.state;
    li.tabIndex = 0;
    li.classList.toggle("open", c.id === openId);
    li.classList.toggle("mine", c.mine);
    const top = el("div", "row");
    top.append(el("span", "platform", c.platform), el("span", "waited", waited(c.waiting_secs)));
    const mid = el("div", "row");
    const claimed = c.claimed_by ? c.claimed_by + (c.mine ? " (you)" : "") : "unclaimed";
    mid.append(el("span", "topic", c.topic || ""), el("span", "claimed", claimed));
    const preview = el("div", "preview");
    preview.append(...c.last_messages.map((m) => el("p", "msg " + m.role, m.content)));
    li.replaceChildren(top, mid, preview);
    return li;
  }));
  setEmpty(ul, "queue-empty", "No one is waiting.", list.length === 0);
  const asking = list.filter((c) => c.state === "requested").length;
  document.title = (asking ? "(" + asking + ") " : "") + "Operator console";
}

function open(id) {
  if (id !== openId) {
    closeConversation();
    openId = id;
  }
  for (const li of $("queue").children) li.classList.toggle("open", li.dataset.id === id);
  load({ conv: true });
}

$("queue").addEventListener("click", (e) => {
  const li = e.target.closest("li.conv");
  if (li) open(li.dataset.id);
});
$("queue").addEventListener("keydown", (e) => {
  const li = e.target.closest("li.conv");
  if (li && (e.key === "Enter" || e.key === " ")) {
    e.preventDefault();
    open(li.dataset.id);
  }
});

// ---- conversation ---------------------------------------------------------

function closeConversation() {
  openId = null;
  conv = null;
  const pane = $("conversation");
  pane.hidden = true;
  delete pane.dataset.id;
  $("conv-none").hidden = false;
  $("reply-text").value = "";
  $("conv-error").textContent = "";
}

function renderConversation(c) {
  const pane = $("conversation");
  const box = $("messages");
  const fresh = pane.dataset.id !== c.id;
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  conv = c;
  $("conv-title").textContent = c.platform;
  $("conv-state").textContent = c.state;
  $("conv-state").dataset.state = c.state;
  $("conv-holder").textContent = c.claimed_by
    ? "held by " + c.claimed_by + (c.mine ? " (you)" : "")
    : "";
  box.replaceChildren(...c.messages.map((m) => {
    const d = el("div", "msg " + m.role);
    d.dataset.id = m.id;
    const meta = el("div", "meta");
    meta.append(el("span", "who", m.role === "operator" ? m.operator || "operator" : WHO[m.role] || m.role), timeEl(m.at));
    d.append(el("p", "text", m.content), meta);
    return d;
  }));
  if (c.messages.length === 0) box.append(el("p", "placeholder", "No messages."));
  $("audit").replaceChildren(...c.audit.map((a) => {
    const li = el("li");
    li.append(timeEl(a.at), " " + a.actor + " " + a.action);
    if (a.detail) li.append(el("span", "detail", " · " + a.detail));
    return li;
  }));
  controls();
  $("conv-none").hidden = true;
  pane.hidden = false;
  pane.dataset.id = c.id;
  if (fresh || atEnd) box.scrollTop = box.scrollHeight;
}

/** Enables what the open conversation's state allows. */
function controls() {
  const claimable = Boolean(conv) && conv.state === "requested" && !conv.claimed_by;
  const mine = Boolean(conv) && conv.mine;
  $("claim").hidden = !claimable;
  $("claim").disabled = !claimable;
  for (const id of ["resolve", "reply-text", "reply-send"]) $(id).disabled = !mine;
  $("reply-text").placeholder = mine
    ? "Write to the customer… (Ctrl+Enter sends)"
    : conv && conv.claimed_by
      ? conv.claimed_by + " is answering this conversation."
      : "Claim the conversation to answer it.";
}

async function convAct(button, fn) {
  const id = openId;
  await act(button, $("conv-error"), fn);
  // Succeeded or not, show the conversation as it now stands.
  if (id === openId) await load({ conv: true, queue: true });
  controls();
}

$("claim").addEventListener("click", () =>
  convAct($("claim"), () => api("claim", { conversation: openId })));

$("resolve").addEventListener("click", () =>
  convAct($("resolve"), () => api("resolve", { conversation: openId })));

$("reply-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const area = $("reply-text");
  const text = area.value.trim();
  if (!text || $("reply-send").disabled) return;
  convAct($("reply-send"), async () => {
    await api("reply", { conversation: openId, text });
    if (area.value.trim() === text) area.value = "";
  });
});

$("reply-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    $("reply-form").requestSubmit();
  }
});

// ---- review ---------------------------------------------------------------

const REASONS = {
  blocked: "The reply was blocked",
  thumbs_down: "The customer rated the reply 👎",
  guard_replaced: "The guard replaced the reply",
  sample: "A random sample",
};

function renderReview(items) {
  const ul = $("review");
  // Items never change: keep the existing ones, with any correction typed into them.
  const old = new Map([...ul.children].map((li) => [li.dataset.message, li]));
  ul.replaceChildren(...items.map((it) => old.get(it.message_id) || reviewItem(it)));
  setEmpty(ul, "review-empty", "Nothing to review.", items.length === 0);
}

function reviewItem(it) {
  const li = el("li", "review");
  li.dataset.message = it.message_id;

  const head = el("div", "row");
  const reason = el("span", "reason", it.reason);
  reason.title = REASONS[it.reason] || "";
  const go = el("button", "open-conv", "Open conversation");
  go.type = "button";
  go.addEventListener("click", () => {
    showTab("queue");
    open(it.conversation);
  });
  head.append(reason, el("span", "platform", it.platform), go);

  const context = el("div", "context");
  context.append(...it.context.map((m) => el("p", "msg " + m.role, m.content)));

  const correction = el("textarea", "correction");
  correction.rows = 2;
  correction.placeholder = "A better reply, to learn from instead";
  correction.setAttribute("aria-label", "Corrected reply");
  const error = el("p", "error");
  error.setAttribute("role", "alert");

  const buttons = [["approve", "Approve"], ["reject", "Reject"], ["correct", "Save correction"]]
    .map(([decision, label]) => {
      const b = el("button", decision, label);
      b.type = "button";
      b.addEventListener("click", () => decide(decision));
      return b;
    });
  const actions = el("div", "actions");
  actions.append(buttons[0], buttons[1], correction, buttons[2]);

  async function decide(decision) {
    const body = { message_id: it.message_id, decision };
    if (decision === "correct") {
      body.correction = correction.value.trim();
      if (!body.correction) {
        error.textContent = "Write the corrected reply first.";
        correction.focus();
        return;
      }
    }
    for (const b of buttons) b.disabled = true;
    error.textContent = "";
    try {
      await api("review", body);
      li.remove();
      setEmpty($("review"), "review-empty", "Nothing to review.", $("review").children.length === 0);
      load({ review: true });
    } catch (e) {
      error.textContent = e.message;
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  li.append(head, context, el("p", "label", "Bot reply"), el("p", "reply", it.reply), actions, error);
  return li;
}

// ---- wiring ---------------------------------------------------------------

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  if (!name || !password) {
    $("login-error").textContent = "Enter your name and password.";
    return;
  }
  act($("login-submit"), $("login-error"), async () => enter(await api("login", { name, password })));
});

$("password-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const old_password = $("old-password").value;
  const new_password = $("new-password").value;
  if ([...new_password].length < 12) {
    $("password-error").textContent = "The new password needs at least 12 characters.";
    return;
  }
  act($("password-submit"), $("password-error"), async () =>
    enter(await api("password", { old_password, new_password })));
});

async function logout(error) {
  try {
    await api("logout", {});
    showLogin("");
  } catch (e) {
    if (e.status !== 401) error.textContent = "Could not log out: " + e.message;
  }
}
$("logout").addEventListener("click", () => logout($("status")));
$("password-cancel").addEventListener("click", () => logout($("password-error")));

$("tab-queue").addEventListener("click", () => showTab("queue"));
$("tab-review").addEventListener("click", () => showTab("review"));
$("redact-toggle").addEventListener("change", () => load({ queue: true, conv: true }));

(async () => {
  try {
    await enter(await api("me"));
  } catch (e) {
    showLogin(e.status === 401 ? "" : e.message);
  }
})();
