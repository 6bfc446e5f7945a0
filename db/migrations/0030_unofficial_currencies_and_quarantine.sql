-- Every unofficial currency Plaid may send, and a quarantine for bank rows that cannot be stored
-- (issue #16).
--
-- Plaid's OpenAPI spec (plaid/plaid-openapi, 2020-09-14.yml, schema UnofficialCurrencyCodeList;
-- copied to tests/fixtures/plaid/unofficial_currency_codes.json) lists the codes below. It gives
-- no exponents, so each one's source is named on its line. The rule: the currency's own smallest
-- unit on its ledger (satoshi, lovelace, drop, …), except where a bigint of that unit could not
-- hold a realistic amount (18-decimal Ethereum tokens: a bigint of wei is 9.22 ETH); those get 9
-- decimals (Ethereum's gwei), which hold 9.2e9 whole coins, more than each token's total supply.
-- Plaid sends amounts as JSON numbers (double precision), so no amount carries more than about 17
-- significant digits anyway. An amount finer than its declared exponent is refused, never
-- rounded (issue #5), and that row alone is quarantined (below), not its page.
SET LOCAL ROLE bankworker_owner;

INSERT INTO bankworker.currencies (code, exponent, iso) VALUES
  ('ADA', 6, false),   -- Cardano: 1 ADA = 1,000,000 lovelace
  ('BAT', 9, false),   -- Basic Attention Token: ERC-20 with 18 decimals; capped at 9 (see above)
  ('BCH', 8, false),   -- Bitcoin Cash: satoshi, as Bitcoin
  ('BNB', 8, false),   -- Binance Coin: 8 decimals on BNB Beacon Chain (BEP-2), where it was issued natively
  ('BTG', 8, false),   -- Bitcoin Gold: satoshi, as Bitcoin
  ('BSV', 8, false),   -- Bitcoin SV: satoshi, as Bitcoin
  ('CNH', 2, false),   -- offshore Chinese yuan: the same unit as ISO 4217 CNY (fen, 2 decimals)
  ('DASH', 8, false),  -- Dash: duff, 1e-8 DASH
  ('DOGE', 8, false),  -- Dogecoin: koinu, 1e-8 DOGE (a bigint holds 9.2e10 DOGE)
  ('ETC', 9, false),   -- Ethereum Classic: wei (18 decimals) capped at 9 (see above)
  ('ETH', 9, false),   -- Ethereum: wei (18 decimals) capped at gwei, 9 (see above)
  ('GBX', 2, false),   -- penny sterling (GBP / 100): Plaid documents no precision; 2 keeps hundredths of a penny
  ('LSK', 8, false),   -- Lisk: beddows, 1e-8 LSK
  ('NEO', 0, false),   -- Neo: the NEO token is indivisible
  ('OMG', 9, false),   -- OMG Network: ERC-20 with 18 decimals; capped at 9 (see above)
  ('QTUM', 8, false),  -- Qtum: satoshi-like unit, 1e-8 QTUM (Bitcoin's UTXO model)
  ('USDT', 6, false),  -- Tether: 6 decimals on Ethereum (ERC-20) and Tron (TRC-20)
  ('XLM', 7, false),   -- Stellar lumens: stroop, 1e-7 XLM
  ('XMR', 12, false),  -- Monero: piconero, 1e-12 XMR (a bigint holds 9.2e6 XMR)
  ('XRP', 6, false),   -- XRP: drop, 1e-6 XRP
  ('ZEC', 8, false),   -- Zcash: zatoshi, 1e-8 ZEC
  ('ZRX', 9, false)    -- 0x: ERC-20 with 18 decimals; capped at 9 (see above)
ON CONFLICT (code) DO NOTHING;
-- BTC (8, satoshi) has been declared since 0009.

-- A bank row (a transaction or an account's balances) that a sync could not store because of its
-- money: a currency bankworker.currencies does not know, or an amount finer than its currency's
-- exponent. Kept raw, exactly as Plaid sent it, so it can be applied once the currency is
-- declared; the rest of its page is applied and the cursor moves. `raw` is text, not jsonb, so
-- the amount's digits stay exactly as sent. One row per Plaid object: a later page that sends the
-- object again replaces it.
CREATE TABLE bankworker.plaid_quarantine (
  tenant_id uuid NOT NULL,
  connection_id uuid NOT NULL,
  kind text NOT NULL CHECK (kind IN ('transaction', 'account')),
  plaid_id text NOT NULL CHECK (length(plaid_id) BETWEEN 1 AND 256),
  reason text NOT NULL CHECK (reason IN ('unknown_currency', 'no_currency', 'amount_unrepresentable')),
  currency text CHECK (length(currency) <= 128),
  detail text NOT NULL CHECK (length(detail) <= 1024),
  raw text NOT NULL CHECK (length(raw) <= 65536),
  quarantined_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, connection_id, kind, plaid_id),
  FOREIGN KEY (tenant_id, connection_id) REFERENCES bankworker.connections (tenant_id, connection_id) ON DELETE CASCADE
);
-- Released rows are found by currency once it is declared.
CREATE INDEX plaid_quarantine_currency ON bankworker.plaid_quarantine (currency) WHERE currency IS NOT NULL;
CALL bankworker.enable_tenant_rls('bankworker.plaid_quarantine');
-- The worker quarantines, replaces and releases rows; the app's role gets nothing (raw bank data).
GRANT SELECT, INSERT, UPDATE, DELETE ON bankworker.plaid_quarantine TO bankworker_worker;
