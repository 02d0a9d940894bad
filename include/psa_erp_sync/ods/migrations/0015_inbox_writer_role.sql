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
-- No SELECT of event payloads, no UPDATE of claims or statuses, no DELETE, nothing outside the inbox
-- but opening exception items for quarantined deliveries.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'psa_erp_sync_inbox_writer') THEN
        CREATE ROLE psa_erp_sync_inbox_writer NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- another database of the same server created it concurrently
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role psa_erp_sync_inbox_writer does not exist and % may not create it', current_user
            USING HINT = 'create it once per server before migrating, as a superuser or CREATEROLE role: '
                         'CREATE ROLE psa_erp_sync_inbox_writer NOLOGIN (compose/postgres-init.sh does)';
END $$;

GRANT USAGE ON SCHEMA inbox TO psa_erp_sync_inbox_writer;
GRANT INSERT ON inbox.event TO psa_erp_sync_inbox_writer;
GRANT SELECT (seq, delivery_id, source_system) ON inbox.event TO psa_erp_sync_inbox_writer;
GRANT INSERT ON inbox.quarantine TO psa_erp_sync_inbox_writer;
-- The quarantine upsert (keyed by source and the signed body's hash, migration 0013) counts a body
-- seen again and keeps the first stored body: it reads the conflict key, its counters and the
-- purge mark, and EXCLUDED.<column> needs SELECT on that column too.
GRANT SELECT (source_system, body_sha256, occurrences, last_delivery_id, body, body_purged_at),
      UPDATE (occurrences, last_seen, last_delivery_id, body, body_purged_at) ON inbox.quarantine
      TO psa_erp_sync_inbox_writer;
-- An authentic but malformed delivery opens its item in the exception queue in the same
-- transaction (issue 13 item 10), so the role may also open or see again an exception item:
-- insert, and the upsert's counters. Nothing else in the exceptions schema.
GRANT USAGE ON SCHEMA exceptions TO psa_erp_sync_inbox_writer;
GRANT INSERT ON exceptions.item TO psa_erp_sync_inbox_writer;
GRANT USAGE ON SEQUENCE exceptions.item_id_seq TO psa_erp_sync_inbox_writer;
GRANT SELECT (kind, source_system, record_type, source_id, reason_code, source_version, detail,
              legal_entity, owner, status, occurrences, last_run_id),
      UPDATE (source_version, detail, legal_entity, owner, status, last_seen, occurrences, last_run_id)
      ON exceptions.item TO psa_erp_sync_inbox_writer;
