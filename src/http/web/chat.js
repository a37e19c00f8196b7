// The web chat: one conversation per browser (its id in localStorage, so a
// reload continues it), replies streamed from /web/chat as server-sent
// events, 👍/👎 on each reply. Every text goes into the page through
// textContent, never as HTML.
"use strict";
const log = document.getElementById("log");
const form = document.getElementById("ask");
const input = document.getElementById("text");
const KEY = "chatforge-conversation";
let conversation = localStorage.getItem(KEY);
if (!conversation) {
  conversation = crypto.randomUUID();
  localStorage.setItem(KEY, conversation);
}

function add(kind, text) {
  const div = document.createElement("div");
  div.className = "msg " + kind;
  const p = document.createElement("p");
  p.textContent = text;
  div.appendChild(p);
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

function rate(div, messageId) {
  const bar = document.createElement("div");
  bar.className = "rate";
  for (const [label, rating, name] of [["👍", "good", "Good reply"], ["👎", "bad", "Bad reply"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", name);
    b.className = "rate-" + rating;
    b.addEventListener("click", async () => {
      const r = await fetch("/web/feedback", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ conversation, message_id: messageId, rating }),
      });
      bar.textContent = r.ok ? "Thanks for the feedback." : "Could not save the rating.";
      bar.classList.add("rated");
    });
    bar.appendChild(b);
  }
  div.appendChild(bar);
}

async function send(text) {
  if (text === "/reset") log.replaceChildren();
  else add("user", text);
  const bot = add("assistant", "…");
  const p = bot.querySelector("p");
  let shown = "";
  const r = await fetch("/web/chat", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ conversation, text }),
  });
  if (!r.ok || !r.body) {
    p.textContent = "The chat is not available right now (" + r.status + ").";
    bot.className = "msg notice";
    return;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const handle = (ev) => {
    switch (ev.type) {
      case "reply_chunk":
        shown += ev.delta;
        p.textContent = shown.trimStart();
        break;
      case "reply":
        p.textContent = ev.text;
        bot.dataset.messageId = ev.message_id;
        break;
      case "feedback_request":
        rate(bot, ev.message_id);
        break;
      case "handoff":
      case "error":
        p.textContent = ev.notice;
        bot.className = "msg notice";
        break;
    }
    log.scrollTop = log.scrollHeight;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) handle(JSON.parse(line.slice(6)));
      }
    }
  }
  // A message while a person has the conversation gets no reply here: the
  // operator's answer arrives on the pushed stream below.
  if (p.textContent === "…") bot.remove();
  else bot.classList.add("done");
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  send(text);
});
document.getElementById("reset").addEventListener("click", () => send("/reset"));
document.getElementById("human").addEventListener("click", () => send("/human"));

// What a person from the support team sends (after /human) arrives on its
// own stream, outside any request of this page.
const pushed = new EventSource("/web/events?conversation=" + encodeURIComponent(conversation));
pushed.addEventListener("message", (e) => {
  const ev = JSON.parse(e.data);
  if (ev.type === "operator") add("operator", ev.text);
});

(async () => {
  try {
    const r = await fetch("/web/history?conversation=" + encodeURIComponent(conversation));
    if (!r.ok) return;
    const h = await r.json();
    for (const m of h.messages) {
      const div = add(m.role === "user" ? "user" : "assistant", m.content);
      if (m.message_id) rate(div, m.message_id);
    }
  } finally {
    document.body.dataset.loaded = "true";
  }
})();
