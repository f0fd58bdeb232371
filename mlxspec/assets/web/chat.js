// The chat page of `mlxspec serve`. The conversation lives here and is sent whole each turn
// (the server's prompt cache prefills only what is new); the answer streams back as
// server-sent events, one chunk per token, each saying whether the draft proposed it
// (`chunk.mlxspec.from_draft`). Model text is only ever inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const chat = { messages: [], controller: null };

// The request for the conversation so far: the system prompt first, the settings set.
function requestBody() {
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(chat.messages);
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const [id, name] of [["temperature", "temperature"], ["top-p", "top_p"], ["max-tokens", "max_tokens"]]) {
    const value = $(id).value.trim();  // empty (or not a number): the server's default
    if (value !== "") body[name] = Number(value);
  }
  return body;
}

// A message added to the page: its item, and the element its text goes into.
function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  item.append(who, content);
  $("conversation").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, content };
}

function clearStats() {
  for (const id of ["tps", "from-draft", "acceptance", "per-round"]) $(id).textContent = "–";
}

// Live speed of one answer: tokens per second since its first token, and the draft's share.
class Meter {
  constructor() {
    this.tokens = 0;
    this.fromDraft = 0;
    this.first = 0;
    clearStats();
  }

  add(fromDraft) {
    const now = performance.now();
    if (this.tokens === 0) this.first = now;
    this.tokens += 1;
    this.fromDraft += fromDraft ? 1 : 0;
    const seconds = (now - this.first) / 1000;
    if (this.tokens > 1 && seconds > 0) $("tps").textContent = ((this.tokens - 1) / seconds).toFixed(1);
    $("from-draft").textContent = `${this.fromDraft} of ${this.tokens}`;
  }

  usage(usage) {  // the last chunk's: what speculation did over the whole answer
    const spec = usage.speculative;
    $("acceptance").textContent = spec ? `${(100 * spec.acceptance_rate).toFixed(0)} %` : "no draft";
    $("per-round").textContent = spec ? spec.tokens_per_round.toFixed(2) : "–";
  }
}

// The `data:` payloads of a server-sent event stream, parsed, until [DONE] or its end.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value, { stream: !done });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
    if (done) return;
  }
}

// The server's error message of a refused request (its JSON `error.message`).
async function refusal(response) {
  try {
    const body = await response.json();
    return body.error.message;
  } catch {
    return `the server answered ${response.status} ${response.statusText}`;
  }
}

// One turn: the request sent, the answer streamed into `content`, its text kept in `reply`.
async function stream(body, content, reply, meter) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body), signal: chat.controller.signal,
  });
  if (!response.ok) throw new Error(await refusal(response));
  for await (const chunk of events(response)) {
    if (chunk.usage) meter.usage(chunk.usage);
    const text = chunk.choices.length ? chunk.choices[0].delta.content : null;
    const fromDraft = Boolean(chunk.mlxspec && chunk.mlxspec.from_draft);
    if (chunk.mlxspec) meter.add(fromDraft);
    if (text) {
      const span = document.createElement("span");
      if (fromDraft) span.className = "draft";
      span.textContent = text;
      content.append(span);
      reply.text += text;
    }
    if (chunk.error) throw new Error(chunk.error.message);  // cut short (the server is stopping)
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("clear").disabled = busy;
  $("stop").disabled = !busy;
}

// Send `text` as the user's next message and stream the answer.
async function send(text) {
  showError("");
  chat.messages.push({ role: "user", content: text });
  const body = requestBody();
  const asked = addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.item.setAttribute("aria-busy", "true");
  const reply = { text: "" };
  let state = "done";
  chat.controller = new AbortController();
  setBusy(true);
  try {
    await stream(body, answer.content, reply, new Meter());
  } catch (error) {
    state = error.name === "AbortError" ? "stopped" : "failed";
    if (state === "failed") showError(error.message);
  }
  chat.controller = null;
  answer.item.removeAttribute("aria-busy");
  answer.item.dataset.state = state;
  if (reply.text) {
    chat.messages.push({ role: "assistant", content: reply.text });
  } else if (state !== "done") {  // nothing came back: the turn is taken back, its text left to edit
    chat.messages.pop();
    asked.item.remove();
    answer.item.remove();
    if (!$("message").value) $("message").value = text;
  }
  setBusy(false);
}

function clearChat() {
  chat.messages = [];
  $("conversation").replaceChildren();
  showError("");
  clearStats();
}

async function showModel() {
  try {
    const models = await (await fetch("/v1/models")).json();
    $("model").textContent = models.data[0].id;
  } catch {
    $("model").textContent = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value;
    if (!text.trim() || chat.controller) return;
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("clear").addEventListener("click", clearChat);
  showModel();
});
