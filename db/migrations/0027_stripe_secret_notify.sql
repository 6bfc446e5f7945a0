-- Adding or removing a Stripe webhook signing secret tells every running worker at once.
--
-- Workers cache each tenant's opened secrets (and tenants without any) in memory; until now a
-- removed secret went on verifying for up to the cache's 60 s lifetime in every worker. Each
-- INSERT or DELETE of a stripe.webhook_secret row now NOTIFYs bankworker_stripe_secrets with the
-- tenant's id, from a trigger, so whatever adds or removes one (`stripe secret add|remove`, a
-- tenant's key destruction shredding all its secrets) notifies in its own transaction, and
-- PostgreSQL delivers the notification only when that transaction commits: a rolled-back
-- removal invalidates nothing, a committed one cannot be missed by a worker that is listening.
-- Identical notifications in one transaction are delivered once. Workers listen on their job
-- channel's connection (queue/listener.hpp) and drop that tenant's cache entry; a worker whose
-- listen connection was down drops its whole cache when it reconnects.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.notify_stripe_secret_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('bankworker_stripe_secrets', OLD.tenant_id::text);
  ELSE
    PERFORM pg_notify('bankworker_stripe_secrets', NEW.tenant_id::text);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER sealed_secrets_stripe_webhook_added AFTER INSERT ON bankworker.sealed_secrets
  FOR EACH ROW WHEN (NEW.purpose = 'stripe.webhook_secret')
  EXECUTE FUNCTION bankworker.notify_stripe_secret_change();
CREATE TRIGGER sealed_secrets_stripe_webhook_removed AFTER DELETE ON bankworker.sealed_secrets
  FOR EACH ROW WHEN (OLD.purpose = 'stripe.webhook_secret')
  EXECUTE FUNCTION bankworker.notify_stripe_secret_change();
