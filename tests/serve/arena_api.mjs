// The arena API against real servers on stories260K (served twice, as "alpha" and "beta"): pages, the 409
// with one model, battles streamed and not (greedy answers equal the chat API's), every kind of bad
// vote, and votes acknowledged right before `kill -9` still counted after a restart.
// Environment: BIN, MODEL, TOK, TMP.
import { startServer, stopped, call, dbLeaderboard, ok, failed, MODEL, TOK } from "./serve_util.mjs";

const TMP = process.env.TMP;
const db = `${TMP}/arena.db`, log = `${TMP}/serve.log`;
const common = ["--tokenizer", TOK, "-t", "1", "--parallel", "2", "--idle-timeout", "5"];
const two = [MODEL, MODEL, "--alias", "alpha", "--alias", "beta", ...common, "--db", db];
const PROMPT = "Once upon a time";

async function sse(base, body) {
  const res = await fetch(base + "/v1/arena/battles", { method: "POST", body: JSON.stringify(body) });
  const text = await res.text();
  const events = text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
  return { status: res.status, type: res.headers.get("content-type"), events };
}

// ------------------------------------------------------------------------ one model: pages and 409
let srv = await startServer([MODEL, ...common], log);
let r = await call(srv.base, "POST", "/v1/arena/battles", { prompt: "hi" });
ok(r.status === 409 && r.json?.error?.code === "arena_needs_two_models" && /two/.test(r.json.error.message),
   "one served model: a battle is refused with 409", r.text);
r = await call(srv.base, "GET", "/v1/arena/leaderboard");
ok(r.status === 200 && r.text === '{"n_battles":0,"models":[]}', "empty leaderboard is valid JSON", r.text);
for (const [path, type, marker] of [["/", "text/html", "<title>camelid · chat"], ["/arena", "text/html", "arena.js"],
    ["/leaderboard", "text/html", "leaderboard.js"], ["/static/style.css", "text/css", ":root"],
    ["/static/chat.js", "text/javascript", "/v1/chat/completions"]]) {
  const res = await fetch(srv.base + path);
  const body = await res.text();
  ok(res.status === 200 && res.headers.get("content-type").startsWith(type) && body.includes(marker) &&
     /default-src 'self'/.test(res.headers.get("content-security-policy") || ""),
     `GET ${path} serves the embedded ${type}`, `${res.status} ${res.headers.get("content-type")}`);
}
ok((await call(srv.base, "GET", "/static/nope.js")).status === 404, "an unknown asset is 404");
ok(!/https?:\/\//.test(await (await fetch(srv.base + "/")).text()), "the chat page loads nothing from elsewhere");
srv.proc.kill("SIGTERM");
await stopped(srv.proc);

// ----------------------------------------------------------------------------- two models: battles
srv = await startServer(two, log);
const B = srv.base;
for (const [body, what] of [["{}", "no prompt"], ['{"prompt":""}', "an empty prompt"], ['{"prompt":5}', "a number"],
    ["not json", "invalid JSON"], ['{"prompt":"x","temperature":9}', "a temperature out of range"],
    ['{"prompt":"x","system":[1]}', "a non-string system prompt"]]) {
  r = await call(B, "POST", "/v1/arena/battles", body);
  ok(r.status === 400 && r.json?.error?.type === "invalid_request_error", `battle with ${what}: 400`, r.text);
}
r = await call(B, "POST", "/v1/arena/battles", { prompt: PROMPT, max_tokens: 12, temperature: 0 });
const b1 = r.json;
ok(r.status === 200 && /^battle-[0-9a-f]+$/.test(b1?.battle_id) && typeof b1.a === "string" && b1.a.length > 0 &&
   typeof b1.b === "string" && ["stop", "length"].includes(b1.finish_reason?.a), "a battle answers both sides", r.text);
const chat = await call(B, "POST", "/v1/chat/completions",
                        { model: "alpha", messages: [{ role: "user", content: PROMPT }], max_tokens: 12, temperature: 0 });
ok(chat.status === 200 && b1.a === chat.json.choices[0].message.content && b1.b === b1.a,
   "greedy battle answers equal the chat API's for the same prompt", `${JSON.stringify(b1)} vs ${chat.text}`);

const s = await sse(B, { prompt: PROMPT, max_tokens: 12, temperature: 0, stream: true });
const evs = s.events.filter((e) => e !== "[DONE]").map((e) => JSON.parse(e));
const joined = (k) => evs.map((e) => e[k]).join("");
ok(s.status === 200 && s.type === "text/event-stream" && s.events.at(-1) === "[DONE]" && evs.length > 3 &&
   evs[0].a === "" && evs[0].b === "" && evs.every((e) => e.battle_id === evs[0].battle_id) &&
   evs.at(-1).finish_reason && joined("a") === b1.a && joined("b") === b1.b,
   `a streamed battle sends the id first, then both sides' text (${evs.length} events), then [DONE]`,
   JSON.stringify(s.events.slice(0, 4)));
const b2 = evs[0].battle_id;

// ----------------------------------------------------------------------------------------- votes
const vote = (id, body) => call(B, "POST", `/v1/arena/battles/${id}/vote`, body);
for (const [body, what] of [["{", "invalid JSON"], ["{}", "no winner"], ['{"winner":"A"}', "an unknown winner"],
    ['{"winner":1}', "a number"], ['{"winner":"model_a"}', "FastChat's spelling"], ["[]", "an array"]]) {
  r = await vote(b1.battle_id, body);
  ok(r.status === 400 && r.json?.error?.message, `vote with ${what}: 400 (${r.json?.error?.message})`, r.text);
}
r = await vote("battle-0123456789abcdef01234567", { winner: "a" });
ok(r.status === 404 && r.json?.error?.code === "battle_not_found", "vote on an unknown battle: 404", r.text);
r = await vote("..%2f..", { winner: "a" });
ok(r.status === 404, "vote on a malformed battle id: 404", r.text);
ok((await call(B, "GET", `/v1/arena/battles/${b1.battle_id}/vote`)).status === 405, "GET on a vote: 405");
r = await vote(b1.battle_id, { winner: "a" });
const names = new Set(["alpha", "beta"]);
ok(r.status === 200 && names.has(r.json.model_a) && names.has(r.json.model_b) && r.json.model_a !== r.json.model_b &&
   r.json.winner === "a" && r.json.battle_id === b1.battle_id,
   "a vote after the bad ones counts and reveals two different models", r.text);
const firstA = r.json.model_a;
r = await vote(b1.battle_id, { winner: "b" });
ok(r.status === 409 && r.json?.error?.code === "already_voted", "a second vote on a battle: 409", r.text);
r = await vote(b2, { winner: "bothbad" });
ok(r.status === 200, "a vote on the streamed battle", r.text);

r = await call(B, "GET", "/v1/arena/leaderboard");
const lb = r.json;
const row = (m) => lb.models.find((x) => x.model === m);
ok(r.status === 200 && lb.n_battles === 2 && lb.models.length === 2 && row(firstA).wins === 1 &&
   row(firstA).battles === 2 && lb.models.every((m) => ["elo", "bt", "bt_lo", "bt_hi"].every(
     (k) => Number.isFinite(m[k])) && m.bt_lo <= m.bt && m.bt <= m.bt_hi),
   "the leaderboard counts both votes (a win and a both-bad tie)", r.text);
ok(JSON.stringify(dbLeaderboard(db)) === JSON.stringify(lb), "camelid arena leaderboard --db prints the same object",
   JSON.stringify(dbLeaderboard(db)));

// ------------------------------------------------------------------------ kill -9 after the acks
const acked = [];
for (let i = 0; i < 5; i++) {
  const bt = await call(B, "POST", "/v1/arena/battles", { prompt: `Tom had a ball ${i}`, max_tokens: 3 });
  const v = await vote(bt.json.battle_id, { winner: i % 2 ? "a" : "tie" });
  if (v.status === 200) acked.push(bt.json.battle_id);
}
srv.proc.kill("SIGKILL"); // right after the last acknowledgement
await stopped(srv.proc);
ok(acked.length === 5, "five more votes acknowledged before kill -9");
srv = await startServer(two, log);
r = await call(srv.base, "GET", "/v1/arena/leaderboard");
ok(r.status === 200 && r.json.n_battles === 7, "after kill -9 and a restart the leaderboard has all 7 votes",
   r.text);
ok(dbLeaderboard(db).n_battles === 7, "and so has the database");
r = await call(srv.base, "POST", `/v1/arena/battles/${acked.at(-1)}/vote`, { winner: "b" });
ok(r.status === 409, "the last vote before the kill still blocks a second one", r.text);
srv.proc.kill("SIGTERM");
await stopped(srv.proc);
ok(srv.proc.exitCode === 0, "SIGTERM exits 0", `exit ${srv.proc.exitCode}`);

if (failed()) {
  console.error(`${failed()} failure(s)`);
  process.exit(1);
}
