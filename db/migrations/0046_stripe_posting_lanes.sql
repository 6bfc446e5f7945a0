-- Posting lanes (#21): a tenant's Stripe events post in up to posting_lanes parallel streams, each
-- in arrival order. Until now one tenant was one serial stream (a posting lock per tenant): under
-- webhook_load a single busy tenant stored 9,000 events/s and its one poster posted 4,500-5,700/s,
-- the backlog growing for as long as the storm lasted, with the second poster thread idle.
--
-- The lane is chosen by the worker when it stores the event, from the money object the event is
-- about: the charge (a charge's own id, or the `charge` / `latest_charge` a refund, dispute,
-- application fee, invoice or payment intent names), else the object's own id (a payout). So the
-- events of one money object share a lane and post in the order they arrived, and different money
-- objects post side by side. The ledger needs no more than that: entries are keyed by money object
-- and leg and inserted in key order (ledger.cpp), so two lanes meeting on one key (a charge and a
-- payment intent naming it, say) wait for each other rather than deadlock, and the ledger ends
-- the same whatever the order (connectors/stripe/posting.hpp). Rows stored before this migration,
-- and platform events routed later, are in lane 0.
ALTER TABLE bankworker.stripe_events ADD COLUMN posting_lane smallint NOT NULL DEFAULT 0
  CONSTRAINT stripe_events_posting_lane_check CHECK (posting_lane >= 0 AND posting_lane < 16);

-- A claim takes one lane's oldest waiting events, in order, straight from the index.
DROP INDEX bankworker.stripe_events_unposted;
CREATE INDEX stripe_events_unposted ON bankworker.stripe_events (tenant_id, posting_lane, received_at, event_id)
  WHERE state IN ('received', 'fetching');
