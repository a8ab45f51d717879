// The arena page: one prompt to two anonymous models side by side (streamed), a vote, then the names.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const $ = (id) => document.getElementById(id);
  const status = $("status"), prompt = $("prompt"), battle = $("battle");
  const voteButtons = ["vote-a", "vote-b", "vote-tie", "vote-bothbad"].map($);
  let battleId = null;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  }

  function reset() {
    battleId = null;
    $("answer-a").textContent = "";
    $("answer-b").textContent = "";
    $("name-a").textContent = "Model A";
    $("name-b").textContent = "Model B";
    for (const b of voteButtons) b.disabled = true;
    $("new-round").hidden = true;
    document.body.dataset.state = "idle";
  }

  async function start() {
    const text = prompt.value;
    if (!text.trim()) return;
    reset();
    battle.disabled = true;
    say("Both models are answering…");
    document.body.dataset.state = "battling";
    let a = "", b = "";
    try {
      await camelid.stream("/v1/arena/battles", { prompt: text, stream: true }, (ev) => {
        battleId = ev.battle_id;
        if (ev.a) { a += ev.a; $("answer-a").textContent = a; }
        if (ev.b) { b += ev.b; $("answer-b").textContent = b; }
      });
      say("Which answer is better?");
      for (const btn of voteButtons) btn.disabled = false;
      document.body.dataset.state = "voting";
    } catch (e) {
      say(e.message, true);
      document.body.dataset.state = "error";
      battle.disabled = false;
    }
  }

  async function vote(winner) {
    for (const btn of voteButtons) btn.disabled = true;
    try {
      const r = await camelid.json("POST", `/v1/arena/battles/${encodeURIComponent(battleId)}/vote`, { winner });
      $("name-a").textContent = "Model A: " + r.model_a;
      $("name-b").textContent = "Model B: " + r.model_b;
      const said = { a: "A is better", b: "B is better", tie: "a tie", bothbad: "both are bad" }[winner];
      say(`Thanks! You voted ${said}.`);
      document.body.dataset.state = "voted";
      document.body.dataset.battleId = battleId;
    } catch (e) {
      say(e.message, true);
      if (e.status !== 409) for (const btn of voteButtons) btn.disabled = false;
    }
    $("new-round").hidden = false;
    battle.disabled = false;
  }

  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); start(); });
  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); start(); }
  });
  for (const btn of voteButtons) btn.addEventListener("click", () => vote(btn.dataset.winner));
  $("new-round").addEventListener("click", () => { reset(); prompt.value = ""; say(""); prompt.focus(); });
  reset();
});
