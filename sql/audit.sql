-- Data-change audit (src/audit.rs), 0.2.0.

CREATE FUNCTION automation.enable_audit(target regclass)
RETURNS text
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enable_audit_wrapper';

COMMENT ON FUNCTION automation.enable_audit(regclass) IS
'Record every INSERT, UPDATE, DELETE and TRUNCATE of a table in automation_audit.log (actor, time, transaction, old and new rows as jsonb, changed columns for UPDATE). Needs ownership of the table. Returns the trigger definitions.';

CREATE FUNCTION automation.disable_audit(target regclass)
RETURNS boolean
LANGUAGE c VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'disable_audit_wrapper';

COMMENT ON FUNCTION automation.disable_audit(regclass) IS
'Stop auditing a table (the rows already logged stay). Returns whether it was audited.';

COMMENT ON FUNCTION automation.audit_row_change() IS
'Trigger function behind automation.enable_audit(): writes the change to automation_audit.log as the log''s owner; the users audited need no privilege on the log.';
