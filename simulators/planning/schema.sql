-- Planning simulator state (schema sim_planning). Amounts are numeric, never floating point.
CREATE TABLE IF NOT EXISTS snapshot (
    snapshot_id         text        PRIMARY KEY,
    scenario            text        NOT NULL,
    version             text        NOT NULL,
    as_of               date        NOT NULL,
    reporting_currency  char(3)     NOT NULL,
    content_hash        text        NOT NULL,   -- sha256 of the normalised body: same id + other hash = 409
    line_count          integer     NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    put_count           integer     NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS snapshot_scenario_idx ON snapshot (scenario, snapshot_id);

CREATE TABLE IF NOT EXISTS snapshot_line (
    snapshot_id       text           NOT NULL REFERENCES snapshot (snapshot_id) ON DELETE CASCADE,
    line_no           integer        NOT NULL,
    project_ref       text           NOT NULL,
    practice          text           NOT NULL,
    legal_entity      text           NOT NULL,
    layer             text           NOT NULL,
    month             date           NOT NULL,
    currency          char(3)        NOT NULL,
    amount            numeric        NOT NULL,
    reporting_amount  numeric        NOT NULL,
    PRIMARY KEY (snapshot_id, line_no),
    UNIQUE (snapshot_id, project_ref, layer, month)
);
