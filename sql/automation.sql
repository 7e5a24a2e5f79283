-- automation: the extension's own schema. Tables here are shared by every
-- feature: pipeline metrics, monitoring samples, the error queue, migrations.
--
-- Install-script hygiene (CVE-2018-1058 / CVE-2020-14350 family): the control
-- file puts the extension in pg_catalog, so this script runs with
-- search_path = pg_catalog and cannot see objects planted in public; every
-- object we create is schema-qualified, and nothing uses @extschema@ inside
-- quotes (CVE-2023-39417).

-- We create the schema ourselves so that it belongs to the extension and goes
-- with DROP EXTENSION. A schema of that name that already exists may hold
-- objects of another role; refuse rather than build on it.
DO $guard$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace
                WHERE nspname OPERATOR(pg_catalog.=) 'automation') THEN
        RAISE EXCEPTION 'schema "automation" already exists'
              USING ERRCODE = 'duplicate_schema',
                    HINT = 'automation_ext creates and owns the schema "automation". Rename or drop the existing schema, then run CREATE EXTENSION again.';
    END IF;
END
$guard$;

CREATE SCHEMA automation;
COMMENT ON SCHEMA automation IS 'automation_ext: functions, metrics, monitoring, error queue, migrations';

-- 0.8.0 (issue 27): tenancy. What a role writes belongs to it, by oid (a
-- regrole column: pg_dump writes the role's name, so a restore maps owners
-- by name, and a rename changes nothing); a role may act on what belongs to
-- a role it may SET ROLE to (src/tenancy.rs). These are C functions that
-- resolve no names (no search_path to pin); row-level security calls them
-- for every row it filters.
CREATE FUNCTION automation.invoker()
RETURNS regrole
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'invoker_wrapper';
COMMENT ON FUNCTION automation.invoker() IS
'The role in effect (current_user as an oid): the default owner of what a role writes.';

CREATE FUNCTION automation.may_act_as(role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'may_act_as_wrapper';
COMMENT ON FUNCTION automation.may_act_as(oid) IS
'May the role in effect act as role (SET ROLE to it: PostgreSQL 15 membership, 16 and later membership WITH SET)? False for NULL and for a role that no longer exists; true for superusers.';

CREATE FUNCTION automation.role_may_act_as(member oid, role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'role_may_act_as_wrapper';
COMMENT ON FUNCTION automation.role_may_act_as(oid, oid) IS
'May member act as role (SET ROLE to it)? False for NULLs and for a role that no longer exists; true for superusers.';

CREATE FUNCTION automation.role_has_privileges_of(member oid, role oid)
RETURNS boolean
LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'role_has_privileges_of_wrapper';
COMMENT ON FUNCTION automation.role_has_privileges_of(oid, oid) IS
'Does member have the privileges of role (itself, or a member that inherits them)? What a workflow grant to a group needs.';

-- Pipeline metrics (the seed's TimescaleDB hypertable). Range-partitioned by
-- time from the first release, so that time-based retention and the rollups
-- never need a table rewrite; the DEFAULT partition means an insert never
-- fails for want of a partition.
CREATE TABLE automation.pipeline_metrics (
    time              timestamptz  NOT NULL,
    pipeline_name     varchar(255) NOT NULL,
    stage             varchar(100) NOT NULL,
    duration_ms       integer,
    records_processed integer,
    status            varchar(50),
    error_message     text,
    CONSTRAINT pipeline_metrics_duration_ms_check CHECK (duration_ms >= 0),
    CONSTRAINT pipeline_metrics_records_processed_check CHECK (records_processed >= 0),
    -- written as a text[] constant: `status IN (...)` on a varchar column is
    -- stored as a varchar[] cast to text[], which pg_dump prints in a form
    -- that parses back to a different expression, and then every partition
    -- of a restore fails to attach ("different definition for check constraint")
    CONSTRAINT pipeline_metrics_status_check
        CHECK (status::text OPERATOR(pg_catalog.=) ANY ('{running,success,error,warning,skipped,timeout,cancelled}'::text[])),
    -- (0.8.0) 'infinity' has no partition, no hour and no place in a rollup
    CONSTRAINT pipeline_metrics_time_finite CHECK (pg_catalog.isfinite(time))
) PARTITION BY RANGE (time);

CREATE TABLE automation.pipeline_metrics_default
    PARTITION OF automation.pipeline_metrics DEFAULT;

-- Indexes per partition, not on the partitioned table (0.3.0): an index of
-- the partitioned table, which CREATE EXTENSION makes before pg_restore
-- attaches the dumped partitions, would give each of them an index at
-- ATTACH, and the dump's own CREATE INDEX of that partition would then fail.
-- maintain_metrics_partitions() indexes each partition it creates alike.
CREATE INDEX pipeline_metrics_default_time_brin
    ON automation.pipeline_metrics_default USING brin (time);
CREATE INDEX pipeline_metrics_default_pipeline_time
    ON automation.pipeline_metrics_default (pipeline_name, time DESC);

COMMENT ON TABLE automation.pipeline_metrics IS
    'One row per pipeline stage run; range-partitioned by time (rows without a partition land in pipeline_metrics_default).';

-- Database health samples (the seed's database_monitoring).
CREATE TABLE automation.database_monitoring (
    check_time           timestamptz NOT NULL DEFAULT pg_catalog.now() PRIMARY KEY,
    active_connections   integer,
    cache_hit_ratio      numeric,
    index_hit_ratio      numeric,
    table_sizes          jsonb,
    long_running_queries integer,
    replication_lag      interval,
    -- beyond the seed (automation.collect_database_metrics fills them):
    -- age of the oldest datfrozenxid in the cluster (wraparound at ~2.1e9)
    xid_wraparound_age   bigint,
    -- pg_stat_database counters of this database, and their growth since
    -- the previous sample (NULL for the first one; the counter itself after
    -- a statistics reset)
    deadlocks_total      bigint,
    deadlocks            bigint,
    temp_bytes_total     bigint,
    temp_bytes           bigint,
    idle_in_transaction  integer,
    -- the user tables with the largest share of dead tuples
    dead_tuple_ratios    jsonb,
    CONSTRAINT database_monitoring_active_connections_check CHECK (active_connections >= 0),
    CONSTRAINT database_monitoring_cache_hit_ratio_check CHECK (cache_hit_ratio BETWEEN 0 AND 100),
    CONSTRAINT database_monitoring_index_hit_ratio_check CHECK (index_hit_ratio BETWEEN 0 AND 100),
    CONSTRAINT database_monitoring_long_running_queries_check CHECK (long_running_queries >= 0)
);

COMMENT ON TABLE automation.database_monitoring IS
    'Periodic database health samples, one row per collection.';

-- The error queue (the seed's automation_errors).
CREATE TABLE automation.errors (
    id            uuid         NOT NULL DEFAULT pg_catalog.gen_random_uuid() PRIMARY KEY,
    error_time    timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    workflow_name varchar(255),
    error_type    varchar(100),
    error_message text,
    error_context jsonb,
    retry_count   integer      NOT NULL DEFAULT 0,
    last_retry_at timestamptz,
    resolved_at   timestamptz,
    -- the workflow runtime (sql/runtime.sql): the execution that failed, the
    -- latest retry enqueued for it, when the next retry may run (backoff),
    -- and when retries ran out (the dead-letter state)
    execution_id       uuid,
    retry_execution_id uuid,
    next_retry_at      timestamptz,
    dead_lettered_at   timestamptz,
    -- 0.8.0: the role whose execution failed (or who recorded it by hand)
    owner              regrole      NOT NULL DEFAULT automation.invoker(),
    -- 0.10.0: the failed execution's input (its metadata), which its
    -- retries are enqueued with: the history may not keep the execution
    -- (a queue's history mode, retention)
    retry_input        jsonb,
    CONSTRAINT errors_retry_count_check CHECK (retry_count >= 0)
);

-- What retry_failed_workflow scans: open errors of a workflow, oldest first.
CREATE INDEX errors_unresolved_workflow_time
    ON automation.errors (workflow_name, error_time)
    WHERE resolved_at IS NULL AND dead_lettered_at IS NULL;
-- (0.8.0) newest first, keyset-paginated (the console's list)
CREATE INDEX errors_recent ON automation.errors (error_time DESC, id DESC);
-- A successful retry resolves its error through this.
CREATE INDEX errors_retry_execution
    ON automation.errors (retry_execution_id)
    WHERE retry_execution_id IS NOT NULL;

COMMENT ON TABLE automation.errors IS
    'Workflow error queue: open rows (resolved_at and dead_lettered_at NULL) are retried by automation.retry_failed_workflow().';

-- Applied schema migrations (the seed's schema_migrations).
CREATE TABLE automation.schema_migrations (
    version    varchar(255) NOT NULL PRIMARY KEY,
    applied_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    checksum   varchar(64),
    -- 0.2.0, filled by automation.apply_migration: who ran it, and how long
    -- its SQL took
    applied_by  name,
    duration_ms numeric
);

COMMENT ON TABLE automation.schema_migrations IS
    'Applied migrations with their SHA-256 checksums (automation.apply_migration, automation.migration_status).';

-- Rows in extension tables are user data: have pg_dump dump them (an
-- extension's tables are otherwise dumped as "CREATE EXTENSION" alone).
SELECT pg_catalog.pg_extension_config_dump('automation.pipeline_metrics_default', '');
SELECT pg_catalog.pg_extension_config_dump('automation.database_monitoring', '');
SELECT pg_catalog.pg_extension_config_dump('automation.errors', '');
SELECT pg_catalog.pg_extension_config_dump('automation.schema_migrations', '');
