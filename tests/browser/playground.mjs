// Drive the playground in headless Chromium: pick the adapter, turn on side-by-side,
// send a message, wait for both streamed answers, save a screenshot.
// usage: node playground.mjs URL SCREENSHOT.png   (PLAYWRIGHT_CORE: path of playwright-core)
import { createRequire } from "module";
const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");
const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#modelA option").length >= 2);
  const models = await page.$$eval("#modelA option", (os) => os.map((o) => o.value));
  await page.check("#compare");
  await page.selectOption("#modelB", models[1]);
  await page.fill("#max_tokens", "40");
  await page.fill("#input", "Hi! What can you do?");
  await page.click("#send");
  // Text appears while streaming, before the answers are done.
  await page.waitForFunction(() => (document.querySelector("#logA .msg.assistant")?.textContent || "").length > 0, null, { timeout: 120000 });
  await page.waitForFunction(() => [...document.querySelectorAll(".msg.assistant")].filter((e) => e.dataset.done === "1").length === 2, null, { timeout: 120000 });
  const answers = await page.$$eval(".msg.assistant", (es) => es.map((e) => ({ text: e.textContent, cls: e.className })));
  const metas = await page.$$eval(".meta", (es) => es.map((e) => e.textContent));
  await page.screenshot({ path: shot });
  console.log(JSON.stringify({ models, answers, metas, errors }));
  if (errors.length || answers.some((a) => a.cls.includes("error") || !a.text)) process.exit(1);
} finally {
  await browser.close();
}
