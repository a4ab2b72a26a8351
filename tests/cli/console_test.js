// Drives the console in headless Chromium (playwright-core, Debian's
// /usr/bin/chromium) as an operator would; console_test.sh starts the mesh.
// Each step asserts what the page shows, waiting on it with a deadline.
'use strict';
const path = require('path');
const assert = require('assert');
const { execFile, spawn } = require('child_process');
const { chromium } = require(path.join(process.env.NODE_MODULES, 'playwright-core'));

const HTTP = process.env.BROKER_HTTP;
const GRPC = process.env.BROKER_GRPC;
const BUF = process.env.BUF;
const BASE = `http://${HTTP}/console/`;

// One unary call through buf curl (gRPC, reflection), as a user would.
function grpc(method, body) {
  return new Promise((resolve, reject) => {
    execFile(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-d', JSON.stringify(body),
      `http://${GRPC}/switchboard.broker.v1.EventBroker/${method}`], (err, stdout, stderr) => {
      if (err) reject(new Error(`${method}: ${stderr || err.message}`)); else resolve(JSON.parse(stdout));
    });
  });
}

function order(cid, total) {
  return grpc('Publish', { event: {
    type: 'order.checkout_initiated', source: 'checkout-service', correlation_id: cid,
    subject: 'ord_' + cid, user_id: 'usr_7',
    data: { customerId: 'cus_7', items: [{ sku: 'sku-1', quantity: 1, price: total }], total },
  } });
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    e.message = `${name}: ${e.message}`;
    throw e;
  }
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The console needs nothing from the internet: any request elsewhere fails the test.
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(`http://${HTTP}/`)) foreign.push(r.url()); });

  await page.goto(BASE + '#live');
  await page.waitForSelector('#conn:has-text("stream: live")', { timeout: 10000 });

  const cid = 'corr_console_' + Date.now();
  await step('live view shows order.completed within 2 s of its publication, without a reload', async () => {
    await order(cid, 25);
    const row = page.locator(`#live-rows tr[data-type="order.completed"][data-cid="${cid}"]`);
    await row.waitFor({ timeout: 30000 });
    const lag = await row.evaluate((tr) => Number(tr.dataset.arrived) - Date.parse(tr.dataset.time));
    assert.ok(lag < 2000, `order.completed reached the page ${lag} ms after it was published`);
    assert.ok(Number(await page.locator('#live-received').textContent()) >= 7, 'events counted');
  });

  await step('trace shows the 4 jobs and the webhook deliveries with their statuses', async () => {
    await page.locator(`#live-rows tr[data-type="order.completed"][data-cid="${cid}"] a.cid`).click();
    await page.waitForSelector('#view-trace:not([hidden])');
    const jobs = page.locator('.trace-job[data-status="JOB_STATUS_COMPLETED"]');
    await page.waitForFunction(() => document.querySelectorAll('.trace-job[data-status="JOB_STATUS_COMPLETED"]').length === 4,
      null, { timeout: 15000 });
    const queues = (await jobs.evaluateAll((els) => els.map((e) => e.dataset.queue))).sort();
    assert.deepStrictEqual(queues, ['inventory', 'notifications', 'order-processing', 'payments']);
    // Every order.* event but checkout_initiated (the shop's own) went to the receiver.
    await page.waitForFunction(() => document.querySelectorAll('.trace-delivery[data-status="DELIVERY_STATUS_DELIVERED"]').length >= 5,
      null, { timeout: 15000 });
    const attempts = await page.locator('.trace-delivery .attempt').first().textContent();
    assert.match(attempts, /#1 HTTP 2\d\d/);
    await page.waitForSelector('#trace-state:has-text("done")', { timeout: 15000 });
    await page.screenshot({ path: process.env.SHOT, fullPage: true });
  });

  await step('a dead-lettered event is replayed with the button and delivered again', async () => {
    // A group member that never acks: with max_deliveries 1 the first
    // delivery's deadline dead-letters the event.
    const sub = spawn(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-d',
      JSON.stringify({ types: ['audit.*'], group: 'auditors', max_deliveries: 1, ack_deadline: '1s' }),
      `http://${GRPC}/switchboard.broker.v1.EventBroker/Subscribe`], { detached: true });
    let received = '';
    sub.stdout.on('data', (d) => { received += d; });
    try {
      await page.goto(BASE + '#groups');
      await page.waitForSelector('tr.group[data-group="auditors"]', { timeout: 10000 });
      const published = await grpc('Publish', { event: { type: 'audit.recorded', source: 'console-test', correlation_id: cid } });
      const row = page.locator('tr.group[data-group="auditors"] td.dead');
      await page.waitForFunction(() => {
        const td = document.querySelector('tr.group[data-group="auditors"] td.dead');
        return td && td.textContent === '1';
      }, null, { timeout: 15000 });
      assert.strictEqual(await row.textContent(), '1');
      await page.locator('tr.group[data-group="auditors"] button[data-action="dead-letters"]').click();
      const dead = page.locator(`tr.dead-letter[data-seq="${published.sequence}"]`);
      await dead.waitFor({ timeout: 10000 });
      assert.strictEqual(await dead.locator('td.last-error').textContent(), 'ack deadline expired');
      await dead.locator('button[data-action="replay"]').click();
      await page.waitForSelector('#flash .ok:has-text("replayed 1 event")', { timeout: 10000 });
      const deadline = Date.now() + 10000;
      const count = () => received.split(published.id).length - 1;
      while (count() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.strictEqual(count(), 2, `the subscriber got the event ${count()} time(s): ${received}`);
    } finally {
      // npm's buf is a wrapper that runs the real binary: end them both.
      process.kill(-sub.pid, 'SIGKILL');
    }
  });

  await step('pausing payments with the button holds a new order at payment; resuming completes it', async () => {
    await page.goto(BASE + '#jobs');
    const payments = page.locator('tr.queue[data-queue="payments"]');
    await payments.waitFor({ timeout: 10000 });
    await payments.locator('button[data-action="pause"]').click();
    await page.waitForSelector('tr.queue[data-queue="payments"][data-paused="true"]', { timeout: 10000 });
    const held = cid + '_held';
    await order(held, 40);
    await page.goto(BASE + '#trace/' + encodeURIComponent(held));
    await page.waitForSelector('.trace-job[data-queue="payments"][data-status="JOB_STATUS_WAITING"]', { timeout: 15000 });
    // Held there: the Jobs view counts it waiting, and nothing went past payment.
    await page.goto(BASE + '#jobs');
    await page.waitForFunction(() => {
      const td = document.querySelector('tr.queue[data-queue="payments"] td.waiting');
      return td && Number(td.textContent) >= 1;
    }, null, { timeout: 10000 });
    const past = await grpc('GetEventHistory', { correlation_id: held, types: ['order.payment_completed'] });
    assert.deepStrictEqual(past.events || [], [], 'payment went ahead while paused');
    await page.locator('tr.queue[data-queue="payments"] button[data-action="resume"]').click();
    await page.waitForSelector('tr.queue[data-queue="payments"][data-paused="false"]', { timeout: 10000 });
    await page.goto(BASE + '#trace/' + encodeURIComponent(held));
    await page.waitForSelector('.trace-event[data-type="order.completed"]', { timeout: 20000 });
  });

  await step('bad input in a form shows the service\'s error', async () => {
    await page.goto(BASE + '#webhooks');
    await page.waitForSelector('tr.endpoint', { timeout: 10000 });
    await page.fill('#test-type', 'Not A Type');
    await page.click('#test-form button[type="submit"]');
    await page.waitForSelector('#flash .error:has-text("event_type")', { timeout: 10000 });
    await page.fill('#test-type', 'webhook.test');
    await page.click('#test-form button[type="submit"]');
    await page.waitForSelector('#flash .ok:has-text("test event queued")', { timeout: 10000 });
  });

  await step('an endpoint\'s deliveries list their attempts, and Redeliver sends one again', async () => {
    await page.locator('tr.endpoint button[data-action="deliveries"]').first().click();
    const delivered = page.locator('tr.delivery[data-status="DELIVERY_STATUS_DELIVERED"]').first();
    await delivered.waitFor({ timeout: 10000 });
    const eventId = await delivered.getAttribute('data-event');
    assert.match(await delivered.locator('.attempt').first().textContent(), /#1 HTTP 2\d\d/);
    const before = await delivered.locator('.attempt').first().getAttribute('data-time');
    await delivered.locator('button[data-action="redeliver"]').click();
    await page.waitForSelector(`#flash .ok:has-text("redelivering ${eventId}")`, { timeout: 10000 });
    // A fresh cycle of attempts, delivered again.
    await page.waitForFunction(([id, was]) => {
      const row = document.querySelector(`tr.delivery[data-event="${id}"]`);
      const attempts = row ? row.querySelectorAll('.attempt') : [];
      return row && row.dataset.status === 'DELIVERY_STATUS_DELIVERED' && attempts.length === 1 &&
        attempts[0].dataset.time !== was;
    }, [eventId, before], { timeout: 10000 });
  });

  await step('the README\'s order-tracking page follows one user\'s order with EventSource', async () => {
    // Served from the shop's own origin, as a frontend would be.
    const shop = await browser.newPage();
    await shop.goto(`http://${process.env.SHOP}/orders`);
    await shop.waitForFunction('typeof source !== "undefined" && source.readyState === EventSource.OPEN',
      null, { timeout: 10000 });
    const mine = cid + '_mine';
    await order(mine, 12);  // user usr_7
    await grpc('Publish', { event: { type: 'order.created', source: 'checkout-service', subject: 'ord_other', user_id: 'usr_8' } });
    // The page opened after the earlier orders: it shows this one only.
    await shop.waitForSelector('li[data-status="order.completed"]', { timeout: 20000 });
    assert.strictEqual(await shop.locator('li').count(), 1, await shop.locator('#orders').innerText());
    assert.match(await shop.locator('li').textContent(), /^ord_\w+: Complete$/);
    await shop.close();
  });

  assert.deepStrictEqual(foreign, [], 'requests left the broker\'s origin');
  assert.deepStrictEqual(pageErrors, [], 'errors in the page');
  await browser.close();
})().catch((e) => {
  console.error('FAIL', e.stack || e.message);
  process.exit(1);
});
