// The chat page: a conversation with one served model over /v1/chat/completions, streamed.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const $ = (id) => document.getElementById(id);
  const messages = $("messages"), status = $("status"), input = $("input");
  const send = $("send"), stop = $("stop");
  let history = [], controller = null;

  function show(role, text) {
    const div = camelid.el("div", { class: "message " + role }, text);
    messages.appendChild(div);
    messages.scrollTop = messages.scrollHeight;
    return div;
  }

  try {
    const models = await camelid.json("GET", "/v1/models");
    for (const m of models.data) $("model").appendChild(camelid.el("option", { value: m.id }, m.id));
  } catch (e) {
    status.textContent = "Cannot list the models: " + e.message;
    status.classList.add("error");
  }

  function numberField(id) {
    const v = $(id).value;
    return v === "" ? undefined : Number(v);
  }

  async function submit() {
    const text = input.value;
    if (!text.trim() || controller) return;
    input.value = "";
    show("user", text);
    history.push({ role: "user", content: text });
    const reply = show("assistant", "");
    const body = {
      model: $("model").value || undefined,
      messages: ($("system").value ? [{ role: "system", content: $("system").value }] : []).concat(history),
      stream: true,
      temperature: numberField("temperature"),
      top_p: numberField("top-p"),
      max_tokens: numberField("max-tokens"),
      seed: numberField("seed"),
    };
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    status.classList.remove("error");
    status.textContent = "Generating…";
    let answer = "", finish = null;
    try {
      await camelid.stream("/v1/chat/completions", body, (chunk) => {
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return;
        if (choice.delta && choice.delta.content) {
          answer += choice.delta.content;
          reply.textContent = answer;
          messages.scrollTop = messages.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }, controller.signal);
      status.textContent = finish === "length" ? "Stopped at the token limit." : "";
    } catch (e) {
      if (e.name === "AbortError") {
        status.textContent = "Stopped.";
      } else {
        status.textContent = e.message;
        status.classList.add("error");
      }
    }
    history.push({ role: "assistant", content: answer });
    reply.dataset.done = "true";
    controller = null;
    send.disabled = false;
    stop.disabled = true;
  }

  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); submit(); }
  });
  stop.addEventListener("click", () => { if (controller) controller.abort(); });
  $("clear").addEventListener("click", () => {
    if (controller) controller.abort();
    history = [];
    messages.textContent = "";
    status.textContent = "";
  });
});
