//! Wiring of the hand-written DDL in `sql/` into the generated install
//! script, in dependency order. The SQL itself stays in the .sql files.

use pgrx::prelude::*;

// The `automation` schema's own tables, and the guard against installing into
// a schema that another role owns. First, before anything pgrx generates.
extension_sql_file!("../sql/automation.sql", name = "automation_schema", bootstrap);

extension_sql_file!(
    "../sql/automation_workflows.sql",
    name = "automation_workflows_schema",
    requires = ["automation_schema"]
);

extension_sql_file!(
    "../sql/automation_triggers.sql",
    name = "automation_triggers_schema",
    requires = ["automation_workflows_schema"]
);

extension_sql_file!("../sql/automation_audit.sql", name = "automation_audit_schema", requires = ["automation_schema"]);

// 0.2.0: the API table with row-level security, migrations, and last the
// group roles, whose grants name objects from every file above.
extension_sql_file!("../sql/api.sql", name = "api", requires = ["automation_workflows_schema"]);

extension_sql_file!("../sql/migrations.sql", name = "migrations", requires = ["automation_schema"]);

extension_sql_file!(
    "../sql/roles.sql",
    name = "roles",
    requires = ["api", "runtime", "monitoring", "automation_triggers_schema", "scheduler", "timeseries", "engine"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).expect("query failed").expect("NULL count")
    }

    #[pg_test]
    fn creates_every_contract_table() {
        let expected = [
            "automation.pipeline_metrics",
            "automation.database_monitoring",
            "automation.errors",
            "automation.schema_migrations",
            "automation_workflows.definitions",
            "automation_workflows.workflow_executions",
            "automation_triggers.registry",
            "automation_audit.log",
            "automation_workflows.api_workflows",
        ];
        for table in expected {
            let found =
                Spi::get_one_with_args::<bool>("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[table.into()])
                    .unwrap()
                    .unwrap();
            assert!(found, "{table} was not created");
        }
    }

    #[pg_test]
    fn creates_the_seed_indexes() {
        let n = count(
            "SELECT count(*) FROM pg_catalog.pg_indexes
              WHERE schemaname = 'automation_workflows'
                AND indexname IN ('idx_active_workflows', 'idx_workflow_metadata',
                                  'idx_workflow_time_brin', 'idx_workflow_status_time',
                                  'idx_workflow_name_lower')",
        );
        assert_eq!(n, 5);
    }

    #[pg_test(
        error = "new row for relation \"workflow_executions\" violates check constraint \"workflow_executions_status_check\""
    )]
    fn rejects_an_unknown_execution_status() {
        Spi::run(
            "INSERT INTO automation_workflows.workflow_executions (workflow_name, status)
             VALUES ('etl', 'sucess')",
        )
        .unwrap();
    }

    #[pg_test]
    fn accepts_every_known_execution_status() {
        Spi::run(
            "INSERT INTO automation_workflows.workflow_executions (workflow_name, status)
             SELECT 'etl', s FROM unnest(ARRAY['pending','running','success','error',
                                               'timeout','cancelled','retrying']) s",
        )
        .unwrap();
        assert_eq!(count("SELECT count(*) FROM automation_workflows.workflow_executions"), 7);
    }

    #[pg_test(
        error = "new row for relation \"pipeline_metrics_default\" violates check constraint \"pipeline_metrics_status_check\""
    )]
    fn rejects_an_unknown_pipeline_status() {
        Spi::run(
            "INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
             VALUES (now(), 'p', 'load', 'ok')",
        )
        .unwrap();
    }

    #[pg_test]
    fn updating_a_definition_moves_updated_at() {
        Spi::run(
            "INSERT INTO automation_workflows.definitions (name, definition, updated_at)
             VALUES ('wf', '{}', now() - interval '1 day')",
        )
        .unwrap();
        Spi::run("UPDATE automation_workflows.definitions SET version = 2 WHERE name = 'wf'").unwrap();
        let fresh =
            Spi::get_one::<bool>("SELECT updated_at = now() FROM automation_workflows.definitions WHERE name = 'wf'")
                .unwrap()
                .unwrap();
        assert!(fresh);
    }

    #[pg_test]
    fn user_data_tables_are_dumped_by_pg_dump() {
        // every table and serial sequence holding user data is registered
        // with pg_extension_config_dump
        let n = count(
            "SELECT pg_catalog.cardinality(extconfig)::bigint FROM pg_catalog.pg_extension
              WHERE extname = 'automation_ext'",
        );
        assert_eq!(n, 25, "0.10.0 added automation.queue_settings");
    }
}
