-- automation_ext 0.4.0 -> 0.5.0
--
-- Frozen once released, like every upgrade script: it repeats the 0.5.0
-- objects from the install files as they were at 0.5.0. pg_test/sql/upgrade.sql
-- checks that an upgraded database has exactly the catalog of a fresh install.
-- Runs with search_path = pg_catalog; everything is schema-qualified.
--
-- 0.5.0: workflow definitions are checked when written (issue 18, part 1):
-- automation.check_definition(jsonb) and the BEFORE trigger
-- trg_definitions_check, which also bumps the version of a changed
-- definition. Existing definitions are not touched: one the format refuses
-- stays as it is (it cannot be started; updating it needs a valid one).

CREATE FUNCTION automation.check_definition(definition jsonb)
RETURNS boolean
LANGUAGE c STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'check_definition_wrapper';

COMMENT ON FUNCTION automation.check_definition(jsonb) IS
'Raise 22023 naming the step and field if definition is not a valid workflow (see docs/workflows.md, Definitions); true if it has steps (it can be started), false if it is data without steps.';

-- BEFORE INSERT OR UPDATE of a definition: a definition with steps must be
-- valid; a changed definition gets the next version (or the higher one the
-- writer set); a version never goes back.
--
-- Not checked while check_function_bodies is off, as PostgreSQL does not
-- check function bodies then: pg_dump's output turns it off, and a dump
-- must restore even if it holds a definition written before 0.5.0 that the
-- format refuses (starting it will say why).
CREATE FUNCTION automation_workflows.definitions_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_RELID IS DISTINCT FROM 'automation_workflows.definitions'::regclass
       OR TG_LEVEL IS DISTINCT FROM 'ROW' OR TG_WHEN IS DISTINCT FROM 'BEFORE' THEN
        RAISE EXCEPTION 'automation_workflows.definitions_check() only runs as a BEFORE ... FOR EACH ROW trigger of automation_workflows.definitions'
              USING ERRCODE = 'wrong_object_type';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.version < OLD.version THEN
            RAISE EXCEPTION 'the version of workflow definition % cannot go back from % to %', OLD.name, OLD.version, NEW.version
                  USING ERRCODE = 'invalid_parameter_value',
                        HINT = 'Versions only grow; changing the definition bumps it by itself.';
        END IF;
        IF NEW.definition IS NOT DISTINCT FROM OLD.definition THEN
            RETURN NEW;
        END IF;
        IF NEW.version = OLD.version THEN
            NEW.version := OLD.version + 1;
        END IF;
    END IF;
    IF current_setting('check_function_bodies')::boolean THEN
        PERFORM automation.check_definition(NEW.definition);
    END IF;
    RETURN NEW;
END
$fn$;

REVOKE EXECUTE ON FUNCTION automation_workflows.definitions_check() FROM PUBLIC;
COMMENT ON FUNCTION automation_workflows.definitions_check() IS
'Internal: BEFORE trigger of automation_workflows.definitions that checks a definition with steps and bumps the version of a changed one (refuses to run for any other table).';

CREATE TRIGGER trg_definitions_check
    BEFORE INSERT OR UPDATE ON automation_workflows.definitions
    FOR EACH ROW EXECUTE FUNCTION automation_workflows.definitions_check();
