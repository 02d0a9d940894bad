-- 0028: milestones as the billing stream read them (issue 14). Forward-only: never edit; add a file.
--
-- A `milestone.completed` webhook makes the stream re-read that one milestone from the PSA within
-- seconds; the read lands here, not in forecast.src_milestone (the forecast's full extract, whose
-- content hash is a snapshot's data version). Billing events take, per milestone, the later read:
-- this row when it was read after the last full extract (forecast.extract 'psa.milestones'),
-- else the extract's row (absent there = gone at source). The full extract stays the safety net.
CREATE TABLE billing.milestone_read (
    milestone_id  text        PRIMARY KEY,
    project_ref   text        NOT NULL,
    amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
    status        text        NOT NULL CHECK (status IN ('planned', 'completed', 'signed_off')),
    completed_on  date,                       -- the day it was signed off (the PSA's completed_at)
    exists_at_source boolean  NOT NULL DEFAULT true,   -- false: the PSA answered "no such milestone"
    read_at       timestamptz NOT NULL DEFAULT now(),
    run_id        text        NOT NULL
);
COMMENT ON TABLE billing.milestone_read IS 'Milestones re-read from the PSA on milestone.completed; newer than the forecast extract, they win.';
