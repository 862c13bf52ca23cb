// Headless-Chromium screenshots for docs/images/, driven by tools/screenshots.py (`make screenshots`).
//
//   node tools/screenshots.cjs JOBS.json
//
// JOBS.json: {"node_dir": "...", "chromium": "/usr/bin/chromium", "jobs": [{"kind": ..., "out": ...}, ...]}
// kinds:
//   mermaid  {source: "<mermaid text>", mermaid_js: "<path to mermaid.min.js>"}  diagram, rendered locally
//   swagger  {url, api_key, body}   Swagger UI: Authorize, POST /v1/predict, Try it out, Execute
//   page     {url, steps?, height?, hide?: [css selectors]}   any page (MLflow UI, Evidently HTML)
//   pre      {text, title}          a text (the demo's output) in an HTML <pre>
// playwright-core and mermaid are npm packages kept out of the repository: the Makefile installs them
// into NODE_DIR (default /tmp/churnops-node) and this script loads them from there. No network beyond
// loopback: the browser is started with everything that phones home switched off.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = require(path.join(spec.node_dir, "node_modules", "playwright-core"));
const WIDTH = 1280;

function log(msg) {
  process.stdout.write(`screenshots.cjs: ${msg}\n`);
}

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

async function mermaid(page, job) {
  const html = `<!doctype html><html><head><meta charset="utf-8">
    <style>body{margin:0;background:#fff;font-family:sans-serif} #d{padding:16px;display:inline-block}</style>
    <script src="file://${job.mermaid_js}"></script></head>
    <body><div id="d"><pre class="mermaid">${escapeHtml(job.source)}</pre></div></body></html>`;
  const file = path.join(os.tmpdir(), `mermaid-${process.pid}.html`);
  fs.writeFileSync(file, html);
  await page.goto(`file://${file}`);
  await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    mermaid.initialize({ startOnLoad: false, theme: "default", flowchart: { useMaxWidth: false } });
    // eslint-disable-next-line no-undef
    await mermaid.run({ querySelector: ".mermaid" });
  });
  const svg = page.locator("#d svg");
  await svg.waitFor();
  // Fit the diagram into the page width (never wider than WIDTH), keeping the viewBox's aspect ratio.
  await page.evaluate((width) => {
    const el = document.querySelector("#d svg");
    const vb = el.viewBox.baseVal;
    const w = Math.min(width - 32, vb.width);
    el.style.maxWidth = "none";
    el.setAttribute("width", String(w));
    el.setAttribute("height", String((w * vb.height) / vb.width));
  }, WIDTH);
  await page.locator("#d").screenshot({ path: job.out });
  fs.unlinkSync(file);
}

async function swagger(page, job) {
  await page.goto(job.url, { waitUntil: "networkidle" });
  await page.locator(".opblock").first().waitFor();
  // Authorize with the API key (the modal lists both schemes; the API key comes first).
  await page.locator(".auth-wrapper button.authorize").click();
  const modal = page.locator(".modal-ux");
  await modal.locator("input").first().fill(job.api_key);
  await modal.locator("button.authorize").first().click();
  await modal.locator("button.btn-done, button.close-modal").first().click();
  // POST /v1/predict: expand, Try it out, put a real record in the body, Execute.
  const op = page.locator(".opblock-post", { has: page.locator('[data-path="/v1/predict"]') }).first();
  await op.locator(".opblock-summary").click();
  await op.locator("button.try-out__btn").click();
  const body = op.locator("textarea.body-param__text");
  await body.fill(JSON.stringify(job.body, null, 2));
  await body.evaluate((el) => {
    el.style.height = `${el.scrollHeight + 8}px`; // the whole request body, no inner scrollbar
  });
  await op.locator("button.execute").click();
  const live = op.locator(".live-responses-table");
  await live.locator(".response-col_status").first().waitFor({ timeout: 30000 });
  await page.waitForTimeout(500);
  // From the operation's header to the end of the live answer (the documented codes below are left out).
  const top = await op.evaluate((el) => el.getBoundingClientRect().top + window.scrollY);
  const box = await live.evaluate((el) => {
    const r = el.getBoundingClientRect();
    return { left: r.left, bottom: r.bottom + window.scrollY };
  });
  const left = await op.evaluate((el) => el.getBoundingClientRect().left);
  const width = await op.evaluate((el) => el.getBoundingClientRect().width);
  await page.screenshot({
    path: job.out,
    fullPage: true,
    clip: { x: left, y: top, width, height: box.bottom - top + 12 },
  });
}

async function anyPage(page, job) {
  await page.setViewportSize({ width: WIDTH, height: job.height || 900 });
  // "load", not "networkidle": the MLflow UI polls and never goes idle.
  await page.goto(job.url, { waitUntil: "load", timeout: 60000 });
  // steps: {wait_text}, {click_text, within?}, {click_selector}, {press}, {scroll_text}, {wait_ms}; {optional: true} tolerates a miss
  for (const step of job.steps || []) {
    try {
      if (step.wait_text) await page.getByText(step.wait_text).first().waitFor({ timeout: 60000 });
      if (step.click_text) {
        const scope = step.within ? page.locator(step.within) : page;
        await scope.getByText(step.click_text, { exact: true }).first().click({ timeout: step.optional ? 5000 : 30000 });
      }
      if (step.click_selector)
        await page.locator(step.click_selector).first().click({ timeout: step.optional ? 5000 : 30000 });
      if (step.press) await page.keyboard.press(step.press);
      if (step.scroll_text)
        await page.getByText(step.scroll_text).first().evaluate((el) => el.scrollIntoView({ block: "start" }));
      if (step.wait_ms) await page.waitForTimeout(step.wait_ms);
    } catch (err) {
      if (!step.optional) throw err;
      log(`optional step ${JSON.stringify(step)} skipped: ${err.message.split("\n")[0]}`);
    }
  }
  if (job.hide && job.hide.length) {
    await page.addStyleTag({ content: job.hide.map((s) => `${s}{display:none !important}`).join("\n") });
  }
  await page.mouse.move(WIDTH - 1, 1); // no hover effects in the picture
  await page.waitForTimeout(job.settle_ms || 1500);
  await page.screenshot({ path: job.out, fullPage: false });
}

async function pre(page, job) {
  const html = `<!doctype html><html><head><meta charset="utf-8"><style>
    body{margin:0;background:#1e1e1e}
    #t{padding:18px 22px;width:${WIDTH - 44}px;color:#d4d4d4;
       font:13px/1.45 "DejaVu Sans Mono",monospace}
    h1{font:bold 15px sans-serif;color:#9cdcfe;margin:0 0 10px 0}
    pre{margin:0;white-space:pre-wrap;word-break:break-word;font:inherit}
    .ok{color:#6a9955} .bad{color:#f44747} .step{color:#dcdcaa}
  </style></head><body><div id="t"><h1>${escapeHtml(job.title || "")}</h1><pre>${job.html_lines
    .map((l) => l)
    .join("\n")}</pre></div></body></html>`;
  await page.setContent(html);
  await page.locator("#t").screenshot({ path: job.out });
}

(async () => {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "churnops-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: spec.chromium || "/usr/bin/chromium",
    headless: true,
    viewport: { width: WIDTH, height: 900 },
    deviceScaleFactor: 1,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--allow-file-access-from-files",
    ],
  });
  let failed = 0;
  try {
    for (const job of spec.jobs) {
      const page = await context.newPage();
      page.setDefaultTimeout(30000);
      try {
        if (job.kind === "mermaid") await mermaid(page, job);
        else if (job.kind === "swagger") await swagger(page, job);
        else if (job.kind === "page") await anyPage(page, job);
        else if (job.kind === "pre") await pre(page, job);
        else throw new Error(`unknown kind ${job.kind}`);
        log(`wrote ${job.out}`);
      } catch (err) {
        failed += 1;
        const shot = `${job.out}.failed.png`;
        await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
        log(`FAILED ${job.kind} -> ${job.out}: ${err.message.split("\n")[0]} (page as it was: ${shot})`);
      } finally {
        await page.close();
      }
    }
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
})();
