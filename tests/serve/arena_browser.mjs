// The web pages in headless Chromium (Debian's chromium driven by playwright-core): the chat page streams a
// reply; on the arena page a battle streams both answers, a vote reveals the names, and the vote is then
// in the database and on the leaderboard (API and page). Environment: BIN, MODEL, TOK, TMP, CHROMIUM.
import { chromium } from "playwright-core";
import fs from "node:fs";
import { startServer, stopped, call, dbLeaderboard, ok, failed, MODEL, TOK } from "./serve_util.mjs";

const TMP = process.env.TMP;
const exe = process.env.CHROMIUM || "/usr/bin/chromium";
if (!fs.existsSync(exe)) {
  console.error(`FAIL: no Chromium at ${exe} (scripts/deps.sh test installs Debian's chromium)`);
  process.exit(1);
}
const db = `${TMP}/web.db`, log = `${TMP}/serve.log`;
const srv = await startServer([MODEL, MODEL, "--alias", "alpha", "--alias", "beta", "--tokenizer", TOK, "-t", "1",
                               "--parallel", "2", "--db", db], log);
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
let exitCode = 0;
try {
  const page = await browser.newPage();
  /* a slow link (100 kB/s), so that the pieces of a stream arrive apart and the page's growing text can
   * be seen however fast the model is */
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions",
                 { offline: false, latency: 5, downloadThroughput: 100000, uploadThroughput: 100000 });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  // every text change of an element, in the page, so that streaming (several growing states) is visible
  const watch = (selector) => page.evaluate((sel) => {
    window.__states = [];
    const seen = () => { const e = document.querySelector(sel); if (e && e.textContent) window.__states.push(e.textContent); };
    new MutationObserver(seen).observe(document.body, { subtree: true, childList: true, characterData: true });
  }, selector);
  const grewInSteps = (states, final) => {
    /* at least one state short of the final text, each a prefix of it: the text came in pieces */
    const distinct = [...new Set(states)];
    return distinct.length >= 3 && distinct[0].length < final.length && distinct.every((t) => final.startsWith(t));
  };

  // ------------------------------------------------------------------------------------------ chat
  await page.goto(srv.base + "/");
  await page.waitForSelector("#model option", { state: "attached", timeout: 10000 });
  const options = await page.$$eval("#model option", (os) => os.map((o) => o.value));
  ok(options.join(",") === "alpha,beta", "the chat page lists the served models", options.join(","));
  await page.selectOption("#model", "beta");
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "120");
  await watch(".message.assistant");
  await page.fill("#input", "Once upon a time");
  await page.click("#send");
  await page.waitForSelector('.message.assistant[data-done="true"]', { timeout: 20000 });
  const reply = await page.textContent(".message.assistant");
  const chatStates = await page.evaluate(() => window.__states);
  const api = await call(srv.base, "POST", "/v1/chat/completions",
                         { model: "beta", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 120,
                           temperature: 0 });
  ok(reply.length > 0 && grewInSteps(chatStates, reply),
     `the chat page shows the reply streamed (${new Set(chatStates).size} growing states)`, JSON.stringify(chatStates));
  ok(reply === api.json.choices[0].message.content, "the streamed reply is the model's greedy answer",
     `${JSON.stringify(reply)} vs ${JSON.stringify(api.json.choices[0].message.content)}`);
  // a second turn keeps the conversation
  await page.fill("#input", "And then?");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll('.message.assistant[data-done="true"]').length === 2,
                             null, { timeout: 20000 });
  ok((await page.$$(".message.user")).length === 2, "a second turn in the same conversation");
  // Stop ends a long reply early and keeps what came
  await page.click("#clear");
  await page.fill("#max-tokens", "400");
  await page.fill("#input", "Tell me a long story");
  await page.click("#send");
  await page.waitForFunction(() => (document.querySelector(".message.assistant")?.textContent || "").length > 0,
                             null, { timeout: 20000 });
  await page.click("#stop");
  await page.waitForSelector('.message.assistant[data-done="true"]', { timeout: 20000 });
  const cut = await page.textContent(".message.assistant");
  const full = await call(srv.base, "POST", "/v1/chat/completions",
                          { model: "beta", messages: [{ role: "user", content: "Tell me a long story" }], max_tokens: 400,
                            temperature: 0 });
  const whole = full.json.choices[0].message.content;
  ok((await page.textContent("#status")) === "Stopped." && cut.length > 0 && cut.length < whole.length &&
     whole.startsWith(cut), `Stop ends the reply early (${cut.length} of ${whole.length} characters)`);
  ok(await page.isEnabled("#send"), "and the page takes the next message");

  // ----------------------------------------------------------------------------------------- arena
  await page.goto(srv.base + "/arena");
  await watch("#answer-a");
  await page.fill("#prompt", "Tell me a story about a cat");
  await page.click("#battle");
  await page.waitForSelector('body[data-state="voting"]', { timeout: 20000 });
  const a = await page.textContent("#answer-a"), b = await page.textContent("#answer-b");
  const arenaStates = await page.evaluate(() => window.__states);
  ok(a.length > 0 && b.length > 0 && grewInSteps(arenaStates, a),
     `the arena streams both answers (${new Set(arenaStates).size} states of A)`, JSON.stringify(arenaStates.slice(0, 5)));
  ok((await page.textContent("#name-a")) === "Model A" && (await page.textContent("#name-b")) === "Model B",
     "the models stay anonymous until the vote");
  await page.click("#vote-a");
  await page.waitForSelector('body[data-state="voted"]', { timeout: 10000 });
  const nameA = (await page.textContent("#name-a")).replace("Model A: ", "");
  const nameB = (await page.textContent("#name-b")).replace("Model B: ", "");
  ok(["alpha", "beta"].includes(nameA) && ["alpha", "beta"].includes(nameB) && nameA !== nameB,
     `the vote reveals the names (A = ${nameA}, B = ${nameB})`);
  ok(await page.isDisabled("#vote-b"), "no second vote from the page");

  const inDb = dbLeaderboard(db);
  const dbRow = inDb.models.find((m) => m.model === nameA);
  ok(inDb.n_battles === 1 && dbRow?.wins === 1 && dbRow?.battles === 1, "the vote is in the database", JSON.stringify(inDb));
  const lb = await call(srv.base, "GET", "/v1/arena/leaderboard");
  ok(lb.status === 200 && lb.json.n_battles === 1 && lb.json.models[0].model === nameA && lb.json.models[0].wins === 1,
     "the vote is on /v1/arena/leaderboard", lb.text);

  // ----------------------------------------------------------------------------------- leaderboard
  await page.goto(srv.base + "/leaderboard");
  await page.waitForSelector('body[data-loaded="1"]', { timeout: 10000 });
  const rows = await page.$$eval("#board tbody tr", (trs) => trs.map((t) => t.dataset.model));
  const marks = await page.$$("#plot circle.point");
  const bars = await page.$$("#plot line.interval");
  ok(rows.join(",") === [nameA, nameB].join(",") && marks.length === 2 && bars.length === 2,
     "the leaderboard page shows the table and the intervals drawn in SVG", rows.join(","));
  ok(pageErrors.length === 0, "no script errors in the pages", pageErrors.join("; "));
} catch (e) {
  console.error("FAIL:", e);
  exitCode = 1;
} finally {
  await browser.close();
  srv.proc.kill("SIGTERM");
  await stopped(srv.proc);
}
if (failed() || exitCode) {
  console.error(`${failed()} failure(s)`);
  process.exit(1);
}
