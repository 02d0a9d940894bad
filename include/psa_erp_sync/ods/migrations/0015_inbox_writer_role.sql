-- 0015: the webhook ingress writes with a role that can only insert into the inbox (issue 12).
-- Forward-only: never edit; add a new file.
--
-- psa_erp_sync_inbox_writer is a NOLOGIN group role. A deployment creates the login role the
-- ingress uses (compose: ods_ingress, in compose/postgres-init.sh) as a member of it; roles are
-- cluster-wide, so the deployment creates this group role too when the migrating role may not
-- create roles (then the CREATE below is skipped). Granted here, per database: insert into
-- inbox.event and inbox.quarantine, plus the column privileges the ingress's two statements
-- need: an ON CONFLICT target's columns must be readable (delivery id, and the source, which
-- deduplication may key on), RETURNING seq, the quarantine's ON CONFLICT DO UPDATE of its
-- counters and latest reason.
-- No SELECT of event payloads, no UPDATE of claims or statuses, no DELETE, nothing outside the inbox.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'psa_erp_sync_inbox_writer') THEN
        CREATE ROLE psa_erp_sync_inbox_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of the same server created it concurrently
END $$;

GRANT USAGE ON SCHEMA inbox TO psa_erp_sync_inbox_writer;
GRANT INSERT ON inbox.event TO psa_erp_sync_inbox_writer;
GRANT SELECT (seq, delivery_id, source_system) ON inbox.event TO psa_erp_sync_inbox_writer;
GRANT INSERT ON inbox.quarantine TO psa_erp_sync_inbox_writer;
-- ON CONFLICT DO UPDATE reads EXCLUDED.<column>, which needs SELECT on that column too; the
-- ingress's quarantine upsert sets reason_code, detail and body from EXCLUDED. If it stops
-- overwriting the body, a later migration can revoke SELECT (body).
GRANT SELECT (delivery_id, source_system, occurrences, reason_code, detail, body),
      UPDATE (occurrences, last_seen, reason_code, detail, body) ON inbox.quarantine TO psa_erp_sync_inbox_writer;
