-- Webhook outbox shared by the simulators (simulators/common/webhooks.py); appended to each
-- simulator's schema.sql at start. Idempotent.

CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id          bigserial PRIMARY KEY,
    url         text        NOT NULL,
    secret      text        NOT NULL,
    events      text[]      NOT NULL,
    is_active   boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per (event, subscription); a background thread delivers pending rows.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq              bigserial PRIMARY KEY,
    delivery_id      uuid        NOT NULL UNIQUE,
    subscription_id  bigint      NOT NULL,
    event            text        NOT NULL,
    body             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dropped', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    sends            integer     NOT NULL DEFAULT 0,
    last_status      integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
