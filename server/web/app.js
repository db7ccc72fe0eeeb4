// The chat page: talks to the riposte API on the same origin (/health, /config, /reply, /simulate).
// No framework and no build step: state lives in one object, the DOM is the view, every request goes through api().
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "riposte.apiKey";
  const POLL_NOT_READY_MS = 2000;
  const POLL_READY_MS = 15000;
  const DEFAULT_PERSONA = document.body.dataset.defaultPersona || "default";
  const MAX_TURNS = Number(document.body.dataset.maxTurns) || 100;

  const el = {
    status: $("status"), statusText: $("status-text"), progress: $("status-progress"),
    log: $("log"), empty: $("empty"), composer: $("composer"), message: $("message"), send: $("send"),
    persona: $("persona"), budget: $("budget"), topic: $("topic"), seed: $("seed"), alternatives: $("alternatives"),
    reset: $("reset"), simForm: $("sim-form"), simTurns: $("sim-turns"), simulate: $("simulate"),
    simPersonas: $("sim-personas"), auth: $("auth"), authForm: $("auth-form"), apiKey: $("api-key"),
  };

  const state = {
    history: [],          // [{speaker, text}]: what the next request carries as its context
    ready: false,         // /health said ok
    busy: false,          // a /reply or /simulate is in flight
    personasLoaded: false,
    needsKey: false,      // the API answered 401: the key field is shown until a key works
    healthTimer: null,
    controller: null,     // aborts the request in flight when the conversation is reset
  };

  // ------------------------------------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  /** One request; resolves to {response, data} (data: the parsed JSON body, or null), whatever the status. */
  async function request(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(path, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`cannot reach the server (${err.message})`, 0);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401) showAuth(errorText(response, data, text));
    return { response, data, text };
  }

  /** The JSON answer of a successful request; any other status throws an ApiError carrying the server's message. */
  async function api(method, path, body, signal) {
    const { response, data, text } = await request(method, path, body, signal);
    if (!response.ok) {
      const message = errorText(response, data, text);
      if (response.status === 401) throw new ApiError(`${message} — enter the server's API key in the box on the right`, 401);
      if (response.status === 503 && path !== "/health") checkHealth();  // perhaps it went back to loading
      throw new ApiError(message, response.status);
    }
    if (data === null) throw new ApiError(`${response.status}: the server's answer was not JSON`, response.status);
    return data;
  }

  /** "422: budget_ms: ..." from {"detail": str | {"message", "errors"}}, OpenAI's {"error": {...}}, or the bare text. */
  function errorText(response, data, text) {
    const detail = data && data.detail;
    let message;
    if (typeof detail === "string") message = detail;
    else if (detail && typeof detail.message === "string") message = detail.message;
    else if (data && data.error && typeof data.error.message === "string") message = data.error.message;
    else if (detail !== undefined && detail !== null) message = JSON.stringify(detail);
    else message = (text || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 300);
    return `${response.status}${response.statusText ? " " + response.statusText : ""}: ${message || "no details given"}`;
  }

  // ------------------------------------------------------------------------------------------------ server state

  /** Ask /health; say what it answered; ask again in 2 s while not ready (15 s once ready). */
  async function checkHealth() {
    clearTimeout(state.healthTimer);
    let next = POLL_NOT_READY_MS;
    try {
      const { response, data } = await request("GET", "/health");
      if (response.ok && data && data.status === "ok") {
        next = POLL_READY_MS;
        if (!state.personasLoaded) await loadPersonas();
        if (state.needsKey) {  // /health is open to all; the API behind it wants the key
          setStatus("auth", "this server needs an API key");
          next = POLL_NOT_READY_MS;
        } else {
          setStatus("ready", "ready");
        }
      } else if (response.status === 401) {
        setStatus("auth", "this server needs an API key");
      } else if (data && typeof data.status === "string") {
        showNotReady(data);
      } else {
        setStatus("error", `the server answered ${response.status} to /health`);
      }
    } catch (err) {
      setStatus("down", `cannot reach the server — retrying (${err.message})`);
    }
    state.healthTimer = setTimeout(checkHealth, next);
  }

  /** 503 from /health: {"status": "loading"|"building"|"error", "detail", "build": {stage, done, total, elapsed_s}}. */
  function showNotReady(health) {
    const words = { loading: "loading the models", building: "building the models", error: "the models failed to load" };
    let text = words[health.status] || health.status;
    const build = health.build;
    if (build && typeof build === "object") {
      const parts = [];
      if (build.stage) parts.push(build.stage);
      if (Number.isFinite(build.done) && Number.isFinite(build.total)) parts.push(`${build.done}/${build.total}`);
      else if (Number.isFinite(build.done)) parts.push(`${build.done} done`);
      if (Number.isFinite(build.elapsed_s)) parts.push(`${formatSeconds(build.elapsed_s)}`);
      if (parts.length) text += ` — ${parts.join(" · ")}`;
    }
    if (health.detail) text += `: ${health.detail}`;
    if (health.status !== "error") text += " — sending is off until the server is ready";
    const progress = build && Number.isFinite(build.done) && Number.isFinite(build.total) && build.total > 0
      ? { value: build.done, max: build.total } : (health.status === "error" ? null : {});
    setStatus(health.status === "error" ? "error" : "loading", text, progress);
  }

  /** The status line; `progress` {value, max} (or {} for an indeterminate bar) shows a progress bar. */
  function setStatus(kind, text, progress = null) {
    el.status.dataset.state = kind;
    el.statusText.textContent = text;
    if (progress) {
      el.progress.hidden = false;
      if (progress.max) {
        el.progress.max = progress.max;
        el.progress.value = progress.value;
      } else {
        el.progress.removeAttribute("value");
      }
    } else {
      el.progress.hidden = true;
    }
    state.ready = kind === "ready";
    updateControls();
  }

  function updateControls() {
    const off = !state.ready || state.busy;
    el.send.disabled = off;
    el.simulate.disabled = off;
    el.send.textContent = state.busy ? "Thinking…" : "Send";
  }

  /** Fill the persona picker, the simulation's checkboxes and the budget's default from /config. */
  async function loadPersonas() {
    let config;
    try {
      config = await api("GET", "/config");
    } catch (err) {
      state.needsKey = err.status === 401;
      if (!state.needsKey) addNote(`could not read the server's settings: ${err.message}`, "error");
      return;
    }
    state.personasLoaded = true;
    state.needsKey = false;
    const names = config.personas;
    const current = el.persona.value || DEFAULT_PERSONA;
    el.persona.replaceChildren(...names.map((name) => new Option(name, name)));
    el.persona.value = names.includes(current) ? current : (names.includes(DEFAULT_PERSONA) ? DEFAULT_PERSONA : names[0]);
    el.budget.placeholder = `${config.budget_ms} (default)`;
    $("budget-hint").textContent =
      `${config.limits.min_budget_ms}–${config.limits.max_budget_ms} ms; empty: the server's default, ${config.budget_ms} ms`;
    // Only the personas that are someone take part: not "all", nor a "default" that stands in for another.
    el.simPersonas.replaceChildren(...config.speaking_personas.map((name) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      label.append(box, ` ${name}`);
      return label;
    }));
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = `none ticked: everyone (${config.speaking_personas.join(", ")})`;
    el.simPersonas.append(hint);
  }

  // ------------------------------------------------------------------------------------------------ the key

  function showAuth(message) {
    el.auth.hidden = false;
    el.auth.querySelector(".hint").textContent = `${message.replace(/\.$/, "")}. The key is kept in this browser only.`;
    if (document.activeElement !== el.apiKey) el.apiKey.focus();
  }

  el.authForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = el.apiKey.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    el.auth.querySelector(".hint").textContent = key ? "Key saved in this browser." : "Key forgotten.";
    state.personasLoaded = false;
    checkHealth();
  });

  // ------------------------------------------------------------------------------------------------ settings

  /** The request fields the settings ask for; throws an ApiError-like message for input the browser could not read. */
  function settings() {
    for (const [input, name] of [[el.budget, "budget"], [el.seed, "seed"], [el.alternatives, "runners-up"]]) {
      if (input.validity.badInput) throw new ApiError(`the ${name} is not a number`, 0);
    }
    const budget = el.budget.value.trim();
    const seed = el.seed.value.trim();
    const alternatives = el.alternatives.value.trim();
    return {
      persona: el.persona.value || DEFAULT_PERSONA,
      budget_ms: budget === "" ? null : Number(budget),
      topic: el.topic.value.trim() || null,
      seed: seed === "" ? null : Number(seed),
      n_alternatives: alternatives === "" ? 5 : Number(alternatives),
    };
  }

  // ------------------------------------------------------------------------------------------------ the log

  function entry(kind, who) {
    const li = document.createElement("li");
    li.className = `entry ${kind}`;
    if (who) {
      li.dataset.persona = who;
      const meta = document.createElement("div");
      meta.className = "meta";
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = who;
      meta.append(name);
      li.append(meta);
    }
    el.log.append(li);
    el.empty.hidden = true;
    return li;
  }

  function scrollDown() {
    el.log.scrollTop = el.log.scrollHeight;
  }

  function paragraph(className, text) {
    const p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    return p;
  }

  function formatScore(score) {
    return score === null || score === undefined ? "not read" : Number(score).toFixed(3);
  }

  function formatMs(ms) {
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function formatSeconds(s) {
    return s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`;
  }

  function addUser(text) {
    const li = entry("user", "you");
    li.append(paragraph("text", text));
    scrollDown();
    return li;
  }

  function addNote(text, kind = "note") {
    const li = entry(kind);
    li.append(paragraph("text", text));
    if (kind === "error") li.setAttribute("role", "alert");
    scrollDown();
    return li;
  }

  function addPending(who, text) {
    const li = entry("bot pending", who);
    li.append(paragraph("text", text));
    scrollDown();
    return li;
  }

  function scoreBadge(score) {
    const span = document.createElement("span");
    span.className = "score";
    span.title = "the editor's score";
    span.textContent = `score ${formatScore(score)}`;
    return span;
  }

  /** A chip of the stats line; `data-stat` and `data-value` let tests (and curious users) read it exactly. */
  function stat(name, label, value, shown = String(value)) {
    const span = document.createElement("span");
    span.className = "stat";
    span.dataset.stat = name;
    span.dataset.value = String(value);
    if (label) {
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = label;
      span.append(key, " ");
    }
    span.append(shown);
    return span;
  }

  function statsLine(stats) {
    const line = document.createElement("div");
    line.className = "stats";
    line.setAttribute("aria-label", "stats of this turn");
    if (stats.generated !== undefined) line.append(stat("generated", "generated", stats.generated));
    if (stats.unique !== undefined) line.append(stat("unique", "unique", stats.unique));
    if (stats.seeded && stats.seeded.words.length) {
      // how many of the turn's candidates were written around the topic's words, the context's, or the words
      // people name in reply to the context's (and which)
      const answering = stats.seeded.answering && stats.seeded.answering.length
        ? ` (answering ${stats.seeded.answering.join(", ")})` : "";
      const around = `${stats.seeded.candidates} around ${stats.seeded.words.join(", ")}${answering}`;
      const label = {topic: "topic", replies: "replies"}[stats.seeded.source] || "context";
      line.append(stat("seeded", label, stats.seeded.words.join(" "), around));
    }
    if (stats.filtered !== undefined) line.append(stat("filtered", "kept", stats.filtered));
    if (stats.sources && (stats.sources.index > 0 || stats.index)) {
      line.append(stat("from_index", "from the index", stats.sources.index));
    }
    line.append(stat("scored", "scored by the editor", stats.scored));
    if (stats.source === "index" || (stats.source && stats.index)) {
      line.append(stat("source", "reply from", stats.source, stats.source === "index" ? "the index" : "this turn"));
    }
    line.append(stat("elapsed_ms", "took", stats.elapsed_ms, formatMs(stats.elapsed_ms)));
    if (stats.budget_ms !== undefined) line.append(stat("budget_ms", "budget", stats.budget_ms, `${Math.round(stats.budget_ms)} ms`));
    const timedOut = stat("timed_out", "", stats.timed_out, stats.timed_out ? "timed out" : "in time");
    timedOut.classList.add(stats.timed_out ? "warn" : "ok");
    line.append(timedOut);
    return line;
  }

  /** Fill a pending entry with /reply's answer: the reply, its score, the runners-up (collapsed) and the stats. */
  function showReply(li, data) {
    li.classList.remove("pending");
    li.querySelector(".text").remove();
    li.querySelector(".meta").append(scoreBadge(data.score));
    if (data.reply === null) {
      li.classList.add("silent");
      const reason = data.stats && data.stats.reason ? data.stats.reason : "no reason given";
      li.append(paragraph("text", `(nothing to say: ${reason})`));
    } else {
      li.append(paragraph("text", data.reply));
    }
    const alternatives = data.alternatives || [];
    if (alternatives.length) {
      const details = document.createElement("details");
      details.className = "runners-up";
      const summary = document.createElement("summary");
      summary.textContent = `${alternatives.length} runner${alternatives.length === 1 ? "" : "s"}-up`;
      const list = document.createElement("ol");
      for (const alt of alternatives) {
        const item = document.createElement("li");
        const text = document.createElement("span");
        text.className = "alt-text";
        text.textContent = alt.text;
        const score = document.createElement("span");
        score.className = "alt-score";
        score.dataset.value = String(alt.score);
        score.textContent = formatScore(alt.score);
        item.append(text, score);
        list.append(item);
      }
      details.append(summary, list);
      li.append(details);
    }
    li.append(statsLine(data.stats));
  }

  function showFailure(li, err) {
    li.className = "entry error";
    li.setAttribute("role", "alert");
    li.replaceChildren(paragraph("text", err.message));
  }

  // ------------------------------------------------------------------------------------------------ chatting

  async function run(work) {
    state.busy = true;
    updateControls();
    const controller = new AbortController();
    state.controller = controller;
    try {
      await work(controller.signal);
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        state.busy = false;
        updateControls();
      }
    }
  }

  /** The settings, or null (with the reason shown in the log) when the browser could not read one. */
  function readSettings() {
    try {
      return settings();
    } catch (err) {
      addNote(err.message, "error");
      return null;
    }
  }

  async function sendMessage() {
    const text = el.message.value.trim();
    if (!text || !state.ready || state.busy) return;
    const asked = readSettings();
    if (asked === null) return;
    const userLine = addUser(text);
    const turn = { speaker: "user", text };
    state.history.push(turn);
    el.message.value = "";
    const pending = addPending(asked.persona, "thinking…");
    await run(async (signal) => {
      try {
        const data = await api("POST", "/reply", { history: state.history.slice(-MAX_TURNS), ...asked }, signal);
        showReply(pending, data);
        if (data.reply !== null) state.history.push({ speaker: "bot", text: data.reply });
      } catch (err) {
        if (err.name === "AbortError") return;
        showFailure(pending, err);
        // Not said after all: out of the context, back in the composer to send again.
        state.history.splice(state.history.indexOf(turn), 1);
        userLine.classList.add("unsent");
        if (!el.message.value) el.message.value = text;
      }
      scrollDown();
    });
  }

  async function simulate() {
    if (!state.ready || state.busy) return;
    const asked = readSettings();
    if (asked === null) return;
    const turns = Number(el.simTurns.value);
    const personas = [...el.simPersonas.querySelectorAll("input:checked")].map((box) => box.value);
    const pending = addPending("simulation", `${personas.length ? personas.join(", ") : "everyone"}: ${turns} turn${turns === 1 ? "" : "s"}…`);
    await run(async (signal) => {
      try {
        const data = await api("POST", "/simulate", {
          personas: personas.length ? personas : null, turns, topic: asked.topic, budget_ms: asked.budget_ms,
          seed: asked.seed, history: state.history.slice(-MAX_TURNS),
        }, signal);
        pending.remove();
        for (const turn of data.turns) {
          const li = entry("bot sim", turn.speaker || turn.persona);
          li.querySelector(".meta").append(scoreBadge(turn.score));
          li.append(paragraph("text", turn.text === null ? "(nothing to say)" : turn.text));
          const line = statsLine({ scored: turn.scored, elapsed_ms: turn.elapsed_ms, timed_out: turn.timed_out });
          li.append(line);
          if (turn.text !== null) state.history.push({ speaker: turn.speaker || turn.persona, text: turn.text });
        }
        addNote(`${data.turns.length} simulated turn${data.turns.length === 1 ? "" : "s"} in ${formatMs(data.elapsed_ms)}`
          + (data.stopped ? ` — stopped: ${data.stopped}` : ""));
      } catch (err) {
        if (err.name === "AbortError") return;
        showFailure(pending, err);
      }
      scrollDown();
    });
  }

  function reset() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.busy = false;
    state.history = [];
    el.log.replaceChildren();
    el.empty.hidden = false;
    updateControls();
    el.message.focus();
  }

  // ------------------------------------------------------------------------------------------------ wiring

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  el.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  el.simForm.addEventListener("submit", (event) => {
    event.preventDefault();
    simulate();
  });
  el.reset.addEventListener("click", reset);

  const storedKey = localStorage.getItem(KEY_STORAGE);
  if (storedKey) {
    el.auth.hidden = false;
    el.apiKey.value = storedKey;
  }
  updateControls();
  checkHealth();
})();
