// Shared by camelid's pages: API calls (with the API key when the server wants one) and a reader for
// server-sent events over fetch (EventSource cannot POST).
"use strict";

const camelid = (() => {
  const KEY = "camelid.apiKey";

  function headers(extra) {
    const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
    const key = localStorage.getItem(KEY);
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // The key box in the header appears when the server answers 401.
  function askForKey() {
    const box = document.getElementById("key-box");
    if (box) box.classList.add("shown");
  }

  function setupKeyBox() {
    const box = document.getElementById("key-box");
    if (!box) return;
    const input = box.querySelector("input"), save = box.querySelector("button");
    input.value = localStorage.getItem(KEY) || "";
    save.addEventListener("click", () => {
      if (input.value) localStorage.setItem(KEY, input.value);
      else localStorage.removeItem(KEY);
      location.reload();
    });
  }

  async function errorText(res) {
    const text = await res.text();
    try {
      const j = JSON.parse(text);
      if (j.error && j.error.message) return j.error.message;
    } catch (e) { /* not JSON */ }
    return `${res.status} ${res.statusText}`;
  }

  // fetch + JSON; throws an Error carrying the server's message and status
  async function request(method, path, body, signal) {
    const res = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined :
                                    JSON.stringify(body), signal });
    if (res.status === 401) askForKey();
    if (!res.ok) {
      const err = new Error(await errorText(res));
      err.status = res.status;
      throw err;
    }
    return res;
  }

  async function json(method, path, body) {
    return (await request(method, path, body)).json();
  }

  // POST a streaming request and call onEvent(object) for every "data:" event until [DONE].
  async function stream(path, body, onEvent, signal) {
    const res = await request("POST", path, body, signal);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return;
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(obj.error.message || "the server reported an error");
          onEvent(obj);
        }
      }
    }
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  document.addEventListener("DOMContentLoaded", setupKeyBox);
  return { json, stream, request, el };
})();
