-- automation.enable_audit: every change of an audited table lands in
-- automation_audit.log, written as the log's owner, so the people audited
-- need (and have) no privilege on the log.
CREATE EXTENSION IF NOT EXISTS automation_ext;

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS "Audit ""Me""; --" CASCADE;
DROP ROLE IF EXISTS regress_writer;
RESET client_min_messages;
TRUNCATE automation_audit.log;

CREATE SCHEMA "Audit ""Me""; --";
CREATE TABLE "Audit ""Me""; --"."Order Lines" (id int PRIMARY KEY, "Qty" int, note text, payload jsonb);
SELECT automation.enable_audit('"Audit ""Me""; --"."Order Lines"');
-- enabling twice replaces, does not duplicate
SELECT automation.enable_audit('"Audit ""Me""; --"."Order Lines"') IS NOT NULL AS again;
SELECT tgname FROM pg_trigger WHERE tgrelid = '"Audit ""Me""; --"."Order Lines"'::regclass ORDER BY 1;

-- a role with table privileges but none on the log
CREATE ROLE regress_writer LOGIN;
GRANT USAGE ON SCHEMA automation, "Audit ""Me""; --" TO regress_writer;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON "Audit ""Me""; --"."Order Lines" TO regress_writer;

SET ROLE regress_writer;
INSERT INTO "Audit ""Me""; --"."Order Lines" VALUES (1, 5, 'x', '{"a": [1, 2]}'), (2, 1, NULL, NULL);
UPDATE "Audit ""Me""; --"."Order Lines" SET "Qty" = 6, note = 'y' WHERE id = 1;
UPDATE "Audit ""Me""; --"."Order Lines" SET note = note WHERE id = 2;   -- nothing changes
DELETE FROM "Audit ""Me""; --"."Order Lines" WHERE id = 2;
TRUNCATE "Audit ""Me""; --"."Order Lines";
SELECT count(*) FROM automation_audit.log;       -- refused: the writer cannot read the log
INSERT INTO automation_audit.log (operation) VALUES ('FORGED');   -- nor write it
RESET ROLE;

SELECT operation, actor, session_actor = session_user AS session_actor_ok, table_schema, table_name,
       old_row, new_row, changed_columns
  FROM automation_audit.log ORDER BY id;
-- one transaction per statement above, in order
SELECT count(DISTINCT xact_id) AS transactions FROM automation_audit.log;

-- a failed statement leaves no audit row
INSERT INTO "Audit ""Me""; --"."Order Lines" VALUES (3, 1, NULL, NULL), (3, 1, NULL, NULL);
SELECT count(*) FROM automation_audit.log WHERE new_row->>'id' = '3';

-- under SET ROLE the actor is the role in effect; superusers are audited too
INSERT INTO "Audit ""Me""; --"."Order Lines" VALUES (4, 1, NULL, NULL);
SELECT actor = current_user AS actor_is_current_user FROM automation_audit.log WHERE new_row->>'id' = '4';

-- partitioned tables: rows are logged under the partition that holds them
CREATE TABLE "Audit ""Me""; --".parted (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE "Audit ""Me""; --".parted_2026 PARTITION OF "Audit ""Me""; --".parted
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT automation.enable_audit('"Audit ""Me""; --".parted') IS NOT NULL AS enabled;
INSERT INTO "Audit ""Me""; --".parted VALUES (1, '2026-05-01');
SELECT operation, table_name, new_row FROM automation_audit.log WHERE table_name LIKE 'parted%';

-- what cannot be audited, and who cannot enable it
SELECT automation.enable_audit('automation_audit.log');
CREATE VIEW "Audit ""Me""; --".v AS SELECT 1 AS x;
SELECT automation.enable_audit('"Audit ""Me""; --".v');
SET ROLE regress_writer;
SELECT automation.enable_audit('"Audit ""Me""; --"."Order Lines"');
RESET ROLE;
-- the trigger function refuses to be used the wrong way
CREATE TABLE "Audit ""Me""; --".wrong (id int);
CREATE TRIGGER wrong BEFORE INSERT ON "Audit ""Me""; --".wrong
    FOR EACH ROW EXECUTE FUNCTION automation.audit_row_change();
INSERT INTO "Audit ""Me""; --".wrong VALUES (1);

-- an audited history: the queue's recorder inserts finished executions
-- through a plan it keeps, and each insert fires the audit trigger, whose
-- own insert is a kept plan too (src/kept.rs: one statement runs inside
-- the other); every recorded execution is audited, none is set aside
SELECT automation.enable_audit('automation_workflows.workflow_executions') IS NOT NULL AS history_audited;
SELECT count(*) AS enqueued
  FROM generate_series(1, 3) n, automation.enqueue_execution('audited-history', jsonb_build_object('n', n));
SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('audited-history', 'w-audit', 3)),
                                      NULL, 'w-audit') AS completed;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM automation.record_executions();
        EXIT WHEN NOT EXISTS (SELECT FROM automation_workflows.execution_log l WHERE l.workflow_name = 'audited-history');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT status, count(*) FROM automation_workflows.workflow_executions
 WHERE workflow_name = 'audited-history' GROUP BY 1;
SELECT operation, new_row->>'status' AS status, count(*) FROM automation_audit.log
 WHERE table_name = 'workflow_executions' AND new_row->>'workflow_name' = 'audited-history' GROUP BY 1, 2;
SELECT count(*) AS set_aside FROM automation.errors WHERE workflow_name = 'audited-history';
SELECT automation.disable_audit('automation_workflows.workflow_executions') IS NOT NULL AS history_not_audited;

-- disable: no more rows; the log keeps what it has
SELECT automation.disable_audit('"Audit ""Me""; --"."Order Lines"');
SELECT automation.disable_audit('"Audit ""Me""; --"."Order Lines"');
INSERT INTO "Audit ""Me""; --"."Order Lines" VALUES (5, 1, NULL, NULL);
SELECT count(*) FROM automation_audit.log WHERE new_row->>'id' = '5';

DROP SCHEMA "Audit ""Me""; --" CASCADE;
REVOKE USAGE ON SCHEMA automation FROM regress_writer;
DROP ROLE regress_writer;
TRUNCATE automation_audit.log;
