// The Stripe webhook handler a team would otherwise write, as the peer bankworker's intake is
// measured against (issue #21; bench/webhook_load --peer node drives it with the same pre-signed
// events and connections as `bankworker run`): express, stripe-node's constructEvent over the raw
// body, and a pg pool that stores the event before answering. One Node process, as a team deploys
// it by default; no logging per request.
//
//   node server.js [PORT]
//
// PORT (argument, else the PORT variable) is the listen port on 127.0.0.1; DATABASE_URL the
// PostgreSQL to store into; STRIPE_WEBHOOK_SECRET_FILE a file holding the endpoint's signing secret
// (whsec_…). It creates its table peer_stripe_events if missing, then listens.
//
//   POST /webhooks/stripe  400 when Stripe-Signature does not verify (300 s tolerance, stripe-node's
//                          default); otherwise INSERT … ON CONFLICT (event_id) DO NOTHING and 200
//                          once that statement committed (a duplicate changes nothing and is 200);
//                          500 when the database failed, so Stripe delivers it again.
//   GET /healthz           200 once the pool reaches the database.
'use strict';

const fs = require('node:fs');
const express = require('express');
const Stripe = require('stripe');
const { Pool } = require('pg');

// Two cores: ten connections keep PostgreSQL busy without queueing inside it. PG_POOL_MAX changes
// it, to see how much of the peer's rate is commit latency (each event is its own commit).
const poolSize = Number(process.env.PG_POOL_MAX || 10);
const bodyLimit = '1mb';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`stripe-node peer: set ${name}`);
    process.exit(2);
  }
  return value;
}

const port = Number(process.argv[2] || process.env.PORT || 3000);
const databaseUrl = required('DATABASE_URL');
const webhookSecret = fs.readFileSync(required('STRIPE_WEBHOOK_SECRET_FILE'), 'utf8').trim();
// Verifying signatures calls no Stripe API, so the API key is a placeholder that is never sent.
const stripe = new Stripe(process.env.STRIPE_SECRET_KEY || 'sk_test_unused_by_webhooks');
const pool = new Pool({ connectionString: databaseUrl, max: poolSize });

const createTable = `CREATE TABLE IF NOT EXISTS peer_stripe_events (
  event_id text PRIMARY KEY,
  type text NOT NULL,
  body jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now())`;
const insertEvent =
  'INSERT INTO peer_stripe_events (event_id, type, body) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING';

const app = express();
app.disable('x-powered-by');

app.post('/webhooks/stripe', express.raw({ type: 'application/json', limit: bodyLimit }), async (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], webhookSecret);
  } catch (err) {
    res.status(400).send(`Webhook Error: ${err.message}`);
    return;
  }
  try {
    // The raw body, not JSON.stringify(event): PostgreSQL parses it into jsonb once, and the peer
    // spends no time serialising again.
    await pool.query({ name: 'insert_event', text: insertEvent, values: [event.id, event.type, req.body.toString('utf8')] });
    res.json({ received: true });
  } catch (err) {
    console.error(`stripe-node peer: storing ${event.id} failed: ${err.message}`);
    res.status(500).json({ error: 'storing the event failed' });
  }
});

app.get('/healthz', async (req, res) => {
  try {
    await pool.query('SELECT 1');
    res.send('ok');
  } catch (err) {
    res.status(503).send('database unavailable');
  }
});

async function main() {
  await pool.query(createTable);
  const server = app.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
  process.on('SIGTERM', () => {
    server.close(() => pool.end().then(() => process.exit(0)));
    server.closeIdleConnections();
  });
}

main().catch((err) => {
  console.error(`stripe-node peer: ${err.message}`);
  process.exit(1);
});
