-- automation_audit: an append-only record of data changes (enable_audit) and
-- of what the extension itself did (index rebuilds and other maintenance).

CREATE SCHEMA automation_audit;
COMMENT ON SCHEMA automation_audit IS 'automation_ext: audit trail';

CREATE TABLE automation_audit.log (
    id              bigserial   PRIMARY KEY,
    logged_at       timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    -- the transaction, so that changes made together can be read together
    xact_id         xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    -- the role in effect, and the role that logged in (they differ under
    -- SET ROLE and inside SECURITY DEFINER functions)
    actor           name        NOT NULL DEFAULT CURRENT_USER,
    session_actor   name        NOT NULL DEFAULT SESSION_USER,
    table_schema    name,
    table_name      name,
    -- INSERT, UPDATE, DELETE, TRUNCATE for row changes; maintenance actions
    -- such as REINDEX use their own upper-case verb
    operation       text        NOT NULL,
    old_row         jsonb,
    new_row         jsonb,
    changed_columns text[],
    details         jsonb,
    CONSTRAINT log_operation_check CHECK (operation ~ '^[A-Z][A-Z_ ]*$')
);

CREATE INDEX log_table_time
    ON automation_audit.log (table_schema, table_name, logged_at);
CREATE INDEX log_logged_at_brin
    ON automation_audit.log USING brin (logged_at);

COMMENT ON TABLE automation_audit.log IS
    'Append-only audit trail: row changes on audited tables and maintenance actions.';

SELECT pg_catalog.pg_extension_config_dump('automation_audit.log', '');
SELECT pg_catalog.pg_extension_config_dump('automation_audit.log_id_seq', '');
