// Tailor's end-user page: chat, compare answers, rate and correct them, see and forget
// yourself. It speaks the same HTTP API as any client. Everything a model or a person
// wrote goes into the page as text (textContent), never as HTML.
"use strict";

const STORAGE_KEY = "tailor.credentials"; // this tab only (sessionStorage), never a URL
const CRITERION_LABELS = {
  helpful: "helpful / not helpful",
  honest: "true / not true",
  harmless: "harmless / harmful",
};
const HOUR_S = 3600;
// One gold check (an answer whose verdict the server knows) per this many judgments: the
// learners weigh a rater's judgments of harm and truth by how they judge these.
const GOLD_EVERY = 10;

const state = { session: null, creds: null, messages: [], round: null, gold: null, goldLater: null };
const $ = (id) => document.getElementById(id);

// --- talking to the API ------------------------------------------------------------------

function authHeaders() {
  const headers = {};
  if (state.creds?.key) headers.Authorization = `Bearer ${state.creds.key}`;
  if (state.creds?.user) headers["X-User-Id"] = state.creds.user;
  return headers;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body?.error?.message) return `${body.error.message} (HTTP ${response.status})`;
  } catch (_) {
    // not an OpenAI error body: say what we know
  }
  return `The server answered HTTP ${response.status} ${response.statusText}.`;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`The server could not be reached (${err.message}).`);
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function notify(message) {
  $("notice").textContent = message;
}

// --- signing in --------------------------------------------------------------------------

async function loadSession() {
  return (await api("/v1/session")).json();
}

function showSignIn() {
  const mode = state.session?.sign_in;
  $("sign-in").hidden = false;
  for (const id of ["chat", "assistant", "sign-out"]) $(id).hidden = true;
  $("whoami").textContent = "";
  $("user-name-field").hidden = mode === "unavailable";
  $("api-key-field").hidden = mode !== "api_key";
  $("sign-in-button").disabled = mode === "unavailable";
  $("sign-in-help").textContent = {
    api_key: "Enter your API key. With a gateway's shared key, enter your user name too.",
    user_name: "Choose a user name: your assistant learns from your judgments under it.",
    unavailable: "This server does not let people sign in here: its operator must set " +
      "TAILOR_API_KEYS or TAILOR_TRUST_USER_HEADERS.",
  }[mode] ?? "";
  $(mode === "api_key" ? "api-key" : "user-name").focus();
}

async function signIn(event) {
  event.preventDefault();
  clearError();
  const user = $("user-name").value.trim();
  const key = $("api-key").value.trim();
  const mode = state.session.sign_in;
  if (mode === "api_key" && !key) return fieldError("api-key", "Enter your API key.");
  if (mode === "user_name" && !user) return fieldError("user-name", "Enter a user name.");
  state.creds = { user: user || null, key: mode === "api_key" ? key : null };
  try {
    state.session = await loadSession();
  } catch (err) {
    state.creds = null;
    return showError(`Sign-in failed: ${err.message}`);
  }
  if (!state.session.user_id) {
    state.creds = null;
    return fieldError("user-name", "This key names no user: with a gateway's key, enter your user name too.");
  }
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state.creds));
  $("api-key").value = "";
  enterChat();
}

function fieldError(id, message) {
  showError(message);
  $(id).focus();
}

function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
  state.creds = null;
  state.messages = [];
  state.round = null;
  state.goldLater = null;
  hideGoldCheck();
  $("transcript").replaceChildren();
  $("answers").replaceChildren();
  $("ranking").hidden = true;
  notify("Signed out.");
  loadSession().then((session) => { state.session = session; showSignIn(); }, (err) => showError(err.message));
}

function enterChat() {
  $("sign-in").hidden = true;
  for (const id of ["chat", "assistant", "sign-out"]) $(id).hidden = false;
  $("whoami").textContent = `Signed in as ${state.session.user_id}`;
  for (const option of [...$("choices").options]) {
    option.disabled = Number(option.value) > state.session.max_choices;
  }
  if (Number($("choices").value) > state.session.max_choices) {
    $("choices").value = String(state.session.max_choices);
  }
  $("message").focus();
  refreshAssistant();
}

// --- chatting ----------------------------------------------------------------------------

function appendTranscript(role, text) {
  const item = document.createElement("li");
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role === "user" ? "You:" : "Assistant:";
  item.append(who, document.createTextNode(text));
  $("transcript").append(item);
}

// The conversation goes on with the best-ranked answer (the first one if unranked),
// or with the correction the user wrote for it.
function commitRound() {
  const round = state.round;
  if (!round?.done) return;
  const best = round.ranking[0] ?? 0;
  const text = round.corrections[best] ?? round.texts[best];
  state.messages.push({ role: "assistant", content: text });
  appendTranscript("assistant", text);
  state.round = null;
}

async function ask(event) {
  event.preventDefault();
  clearError();
  const text = $("message").value.trim();
  if (!text) return fieldError("message", "Write a message first.");
  const n = Number($("choices").value);
  commitRound();
  state.messages.push({ role: "user", content: text });
  appendTranscript("user", text);
  $("message").value = "";
  const round = newRound(n);
  $("send").disabled = true;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      body: { model: state.session.model, messages: state.messages, n, stream: true },
    });
    await readStream(response, round);
    round.done = true;
    for (const card of round.cards) card.enable();
    notify(n > 1 ? "Answers ready: rate or rank them." : "Answer ready.");
  } catch (err) {
    state.messages.pop(); // unanswered: the next message replaces it
    for (const card of round.cards) card.status.textContent = "No answer.";
    showError(err.message);
  } finally {
    $("send").disabled = false;
    updateRanking(round);
  }
}

// Server-sent events of an OpenAI streamed completion: "data: {chunk}" blocks, then [DONE].
async function readStream(response, round) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("The answer stopped before it was complete; send the message again.");
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`${chunk.error.message} (while answering)`);
      round.completionId = chunk.id;
      for (const choice of chunk.choices) {
        const piece = choice.delta?.content;
        if (piece) {
          round.texts[choice.index] += piece;
          round.cards[choice.index].text.textContent = round.texts[choice.index];
        }
      }
    }
  }
}

// --- one round of answers: rate, rank, correct ---------------------------------------------

function newRound(n) {
  $("answers").replaceChildren();
  const round = {
    n, completionId: null, done: false, texts: Array(n).fill(""), ranking: [],
    corrections: {}, cards: [],
  };
  state.round = round;
  for (let i = 0; i < n; i++) round.cards.push(makeCard(round, i));
  $("ranking").hidden = n < 2;
  updateRanking(round);
  return round;
}

function makeCard(round, i) {
  const node = $("answer-template").content.firstElementChild.cloneNode(true);
  const name = `answer ${i + 1}`;
  const part = (selector) => node.querySelector(selector);
  node.setAttribute("aria-label", `Answer ${i + 1}`);
  part(".answer-title").textContent = `Answer ${i + 1}`;
  part(".rate").setAttribute("aria-label", `Rate ${name}`);
  for (const [field, label] of [["score", "score-label"], ["criterion", "criterion-label"],
    ["correction-text", "correction-label"]]) {
    part(`.${field}`).id = `a${i}-${field}`;
    part(`.${label}`).htmlFor = `a${i}-${field}`;
  }
  part(".score-label").textContent = `Score for ${name} (1–10)`;
  part(".criterion-label").textContent = `What your judgment of ${name} is about`;
  part(".correction-label").textContent = `The answer you wanted instead of ${name}`;
  for (const criterion of state.session.criteria) {
    const option = document.createElement("option");
    option.value = criterion;
    option.textContent = CRITERION_LABELS[criterion] ?? criterion;
    part(".criterion").append(option);
  }
  const labels = {
    ".thumb-up": `Thumbs up for ${name}`, ".thumb-down": `Thumbs down for ${name}`,
    ".score-only": `Send score for ${name}`, ".rank-next": `Rank ${name} next`,
    ".edit": `Correct ${name}`, ".send-correction": `Send correction of ${name}`,
    ".cancel-correction": `Cancel correction of ${name}`,
  };
  for (const [selector, label] of Object.entries(labels)) part(selector).setAttribute("aria-label", label);
  const buttons = [...node.querySelectorAll("button, select")];
  for (const control of buttons) control.disabled = true;
  if (round.n < 2) part(".rank-next").hidden = true;

  const card = {
    node, text: part(".answer-text"), status: part(".status"), badge: part(".rank-badge"),
    enable: () => { for (const control of buttons) control.disabled = false; },
  };
  const judgment = () => {
    const body = { choice: i, criterion: part(".criterion").value };
    const score = part(".score").value;
    return [body, score ? Number(score) : null];
  };
  part(".thumb-up").addEventListener("click", () => thumb(round, card, judgment, "up"));
  part(".thumb-down").addEventListener("click", () => thumb(round, card, judgment, "down"));
  part(".score-only").addEventListener("click", () => {
    const [body, score] = judgment();
    if (score === null) return fieldError(`a${i}-score`, `Choose a score for ${name} first.`);
    sendFeedback(round, card, { ...body, type: "score", score }, `Score ${score} sent.`);
  });
  part(".rank-next").addEventListener("click", () => rankNext(round, i));
  part(".edit").addEventListener("click", () => {
    part(".correction").hidden = false;
    part(".correction-text").value = round.corrections[i] ?? round.texts[i];
    part(".correction-text").focus();
  });
  part(".cancel-correction").addEventListener("click", () => {
    part(".correction").hidden = true;
    part(".edit").focus();
  });
  part(".send-correction").addEventListener("click", async () => {
    const text = part(".correction-text").value;
    if (!text.trim()) return fieldError(`a${i}-correction-text`, "Write the answer you wanted.");
    const [body] = judgment();
    if (await sendFeedback(round, card, { ...body, type: "correction", correction: text },
      "Correction sent.")) {
      round.corrections[i] = text;
      part(".correction").hidden = true;
      part(".edit").focus();
    }
  });
  $("answers").append(node);
  return card;
}

function thumb(round, card, judgment, value) {
  const [body, score] = judgment();
  const scored = score === null ? {} : { score };
  const said = `Thumbs ${value}${score === null ? "" : `, score ${score}`} sent.`;
  sendFeedback(round, card, { ...body, ...scored, type: "thumbs", value }, said);
}

async function sendFeedback(round, card, body, done) {
  if (!round.done) return false;
  clearError();
  card.status.textContent = "Sending…";
  try {
    const response = await api("/v1/feedback", {
      method: "POST", body: { completion_id: round.completionId, ...body },
    });
    const accepted = await response.json();
    card.status.textContent = accepted.duplicate ? "Already recorded." : done;
    refreshAssistant();
    return true;
  } catch (err) {
    card.status.textContent = "Not sent.";
    showError(err.message);
    return false;
  }
}

function rankNext(round, i) {
  if (!round.done || round.ranking.includes(i)) return;
  round.ranking.push(i);
  updateRanking(round);
  if (round.ranking.length === round.n) $("send-ranking").focus();
}

function updateRanking(round) {
  if (!round) return;
  round.cards.forEach((card, i) => {
    const place = round.ranking.indexOf(i);
    card.badge.textContent = place < 0 ? "" : `Rank ${place + 1}`;
  });
  $("ranking-order").textContent = round.ranking.length
    ? `Your order so far: ${round.ranking.map((i) => `answer ${i + 1}`).join(", ")}`
    : "No answer ranked yet.";
  $("send-ranking").disabled = !round.done || round.ranking.length !== round.n;
  $("clear-ranking").disabled = !round.done;
}

async function sendRanking() {
  const round = state.round;
  if (!round || round.ranking.length !== round.n) return;
  clearError();
  try {
    const response = await api("/v1/feedback", {
      method: "POST",
      body: { completion_id: round.completionId, type: "ranking", ranking: round.ranking },
    });
    const accepted = await response.json();
    $("ranking-order").textContent = accepted.duplicate ? "This ranking was already recorded."
      : `Ranking sent: ${round.ranking.map((i) => `answer ${i + 1}`).join(" > ")}.`;
    refreshAssistant();
  } catch (err) {
    showError(err.message);
  }
}

function clearRanking() {
  if (!state.round) return;
  state.round.ranking = [];
  updateRanking(state.round);
}

function newConversation() {
  state.messages = [];
  state.round = null;
  $("transcript").replaceChildren();
  $("answers").replaceChildren();
  $("ranking").hidden = true;
  notify("New conversation.");
  $("message").focus();
}

// --- your assistant ----------------------------------------------------------------------

async function refreshAssistant() {
  const user = state.session?.user_id;
  if (!user) return;
  let view = null;
  try {
    const response = await fetch(`/v1/users/${encodeURIComponent(user)}`, { headers: authHeaders() });
    if (response.status !== 404) {
      if (!response.ok) throw new Error(await errorMessage(response));
      view = await response.json();
    }
  } catch (err) {
    return showError(err.message);
  }
  const feedback = view?.feedback;
  const training = view?.training;
  $("fact-adapter").textContent = view?.adapter_version ?? "none yet: the base model answers you";
  $("fact-given").textContent = feedback
    ? `${feedback.total} (${feedback.thumbs_up} up, ${feedback.thumbs_down} down, ` +
      `${feedback.rankings} rankings, ${feedback.scores} scores, ${feedback.corrections} corrections)`
    : "0";
  $("fact-pending").textContent = String(training?.pending ?? 0);
  const until = training ? training.until_next_update : null;
  $("fact-next").textContent = until === null ? "after your first judgments"
    : until > 0 ? `after ${until} more judgment${until === 1 ? "" : "s"}`
      : "due now: a learner will pick it up";
  const accuracy = view?.learner?.reward_accuracy;
  $("fact-accuracy").textContent = typeof accuracy === "number"
    ? `${Math.round(accuracy * 100)}% of your new judgments predicted before learning them`
    : "not measured yet";
  drawHistory(view?.history ?? []);
  offerGoldCheck(feedback);
}

// --- gold checks ---------------------------------------------------------------------------

async function offerGoldCheck(feedback) {
  const user = state.session?.user_id;
  const due = feedback && feedback.total >= GOLD_EVERY * (feedback.gold_checks + 1);
  // "Not now" waits for the next judgment
  if (!user || !due || state.goldLater === feedback.total) return hideGoldCheck();
  if (state.gold) return; // one is on screen already
  let check;
  try {
    const response = await fetch(`/v1/users/${encodeURIComponent(user)}/gold-checks/next`,
      { headers: authHeaders() });
    if (response.status === 404) return hideGoldCheck(); // none left, or no principles
    if (!response.ok) throw new Error(await errorMessage(response));
    check = await response.json();
  } catch (err) {
    return showError(err.message);
  }
  state.gold = { ...check, total: feedback.total };
  $("gold-question").textContent = check.question;
  $("gold-prompt").textContent = check.prompt;
  $("gold-answer").textContent = check.answer;
  $("gold-check").hidden = false;
}

function hideGoldCheck() {
  state.gold = null;
  $("gold-check").hidden = true;
}

async function answerGoldCheck(thumb) {
  const check = state.gold;
  if (!check) return;
  clearError();
  const user = encodeURIComponent(state.session.user_id);
  try {
    await api(`/v1/users/${user}/gold-checks/${encodeURIComponent(check.id)}`, {
      method: "POST", body: { thumb },
    });
  } catch (err) {
    return showError(`Your check was not recorded: ${err.message}`);
  }
  hideGoldCheck();
  notify("Thank you: your check was recorded.");
  $("message").focus();
  refreshAssistant();
}

function goldCheckLater() {
  state.goldLater = state.gold?.total ?? null;
  hideGoldCheck();
  $("message").focus();
}

function drawHistory(history) {
  const svg = $("history-chart");
  const now = Math.floor(Date.now() / 1000 / HOUR_S) * HOUR_S;
  const hours = Array.from({ length: 24 }, (_, k) => now - (23 - k) * HOUR_S);
  const counts = new Map(history.map((h) => [h.hour, h.judgments]));
  const values = hours.map((hour) => counts.get(hour) ?? 0);
  const top = Math.max(1, ...values);
  const width = 240 / 24;
  const bars = values.map((value, k) => {
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const height = (value / top) * 56;
    bar.setAttribute("x", String(k * width + 1));
    bar.setAttribute("width", String(width - 2));
    bar.setAttribute("y", String(60 - height));
    bar.setAttribute("height", String(height));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${value} judgment${value === 1 ? "" : "s"} at ${new Date(hours[k] * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    bar.append(title);
    return bar;
  });
  svg.replaceChildren(...bars);
  const total = values.reduce((a, b) => a + b, 0);
  $("history-caption").textContent = `Your judgments per hour, last 24 hours: ${total} in all`;
}

function askForget() {
  $("forget-dialog").showModal();
}

async function forget() {
  $("forget-dialog").close();
  clearError();
  try {
    await api(`/v1/users/${encodeURIComponent(state.session.user_id)}`, { method: "DELETE" });
  } catch (err) {
    return showError(`Nothing was deleted: ${err.message}`);
  }
  state.messages = [];
  state.round = null;
  state.goldLater = null;
  hideGoldCheck();
  $("transcript").replaceChildren();
  $("answers").replaceChildren();
  $("ranking").hidden = true;
  notify("Your data was deleted. Your assistant is the base model again.");
  refreshAssistant();
  $("forget").focus();
}

// --- start ---------------------------------------------------------------------------------

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("ask-form").addEventListener("submit", ask);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-chat").addEventListener("click", newConversation);
  $("send-ranking").addEventListener("click", sendRanking);
  $("clear-ranking").addEventListener("click", clearRanking);
  $("refresh").addEventListener("click", refreshAssistant);
  $("forget").addEventListener("click", askForget);
  $("forget-confirm").addEventListener("click", forget);
  $("gold-yes").addEventListener("click", () => answerGoldCheck("up"));
  $("gold-no").addEventListener("click", () => answerGoldCheck("down"));
  $("gold-later").addEventListener("click", goldCheckLater);
  $("forget-cancel").addEventListener("click", () => { $("forget-dialog").close(); $("forget").focus(); });

  const saved = sessionStorage.getItem(STORAGE_KEY);
  state.creds = saved ? JSON.parse(saved) : null;
  try {
    state.session = await loadSession();
  } catch (err) {
    // saved credentials no longer valid (a key revoked): sign in again
    sessionStorage.removeItem(STORAGE_KEY);
    state.creds = null;
    try {
      state.session = await loadSession();
    } catch (again) {
      return showError(again.message);
    }
    showError(err.message);
  }
  if (state.creds && state.session.user_id) enterChat();
  else showSignIn();
}

document.addEventListener("DOMContentLoaded", start);
