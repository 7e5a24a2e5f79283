//! Schema discovery: `automation.generate_insert(regclass)`. The column
//! listing `automation.describe_tables` is plain SQL (sql/discovery.sql).

use pgrx::prelude::*;

use crate::error::{Context, Error, Result};

/// Building the statement: no PostgreSQL in here.
pub mod statement {
    /// A column as the catalog describes it; `quoted` is its name already
    /// quoted by PostgreSQL's `quote_ident` (which knows the keyword list).
    #[derive(Debug, Clone)]
    pub struct Column {
        pub quoted: String,
        /// `attgenerated <> ''`: computed, cannot be inserted into
        pub generated: bool,
        /// `attidentity = 'a'`: GENERATED ALWAYS AS IDENTITY, refuses values
        /// without OVERRIDING SYSTEM VALUE
        pub identity_always: bool,
    }

    impl Column {
        fn accepts_values(&self) -> bool {
            !self.generated && !self.identity_always
        }
    }

    /// `INSERT INTO <table> (<c1>, …) VALUES ($1, …)`, columns in the order
    /// given (column order); `DEFAULT VALUES` when no column takes a value.
    pub fn insert(table: &str, columns: &[Column]) -> String {
        let names: Vec<&str> = columns.iter().filter(|c| c.accepts_values()).map(|c| c.quoted.as_str()).collect();
        if names.is_empty() {
            return format!("INSERT INTO {table} DEFAULT VALUES");
        }
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), placeholders.join(", "))
    }

    #[cfg(test)]
    mod unit {
        use super::*;

        fn col(name: &str) -> Column {
            Column { quoted: name.into(), generated: false, identity_always: false }
        }

        #[test]
        fn numbers_placeholders_in_column_order() {
            let sql = insert("public.t", &[col("a"), col("\"B c\""), col("d")]);
            assert_eq!(sql, "INSERT INTO public.t (a, \"B c\", d) VALUES ($1, $2, $3)");
        }

        #[test]
        fn skips_generated_and_identity_always_and_keeps_numbering_dense() {
            let cols = [
                Column { identity_always: true, ..col("id") },
                col("a"),
                Column { generated: true, ..col("total") },
                col("b"),
            ];
            assert_eq!(insert("t", &cols), "INSERT INTO t (a, b) VALUES ($1, $2)");
        }

        #[test]
        fn a_table_without_insertable_columns_gets_default_values() {
            let cols = [Column { identity_always: true, ..col("id") }];
            assert_eq!(insert("t", &cols), "INSERT INTO t DEFAULT VALUES");
            assert_eq!(insert("t", &[]), "INSERT INTO t DEFAULT VALUES");
        }

        #[test]
        fn more_than_nine_columns_count_past_single_digits() {
            let cols: Vec<Column> = (0..12).map(|i| col(&format!("c{i}"))).collect();
            let sql = insert("t", &cols);
            assert!(sql.ends_with("$10, $11, $12)"), "{sql}");
        }
    }
}

#[pg_schema]
mod automation {
    use pgrx::prelude::*;

    use crate::error::OrRaise;

    /// `automation.generate_insert(target regclass) → text`; declared by hand
    /// in sql/discovery.sql because pgrx has no Rust type for regclass.
    #[pg_extern(sql = false)]
    fn generate_insert(target: pg_sys::Oid) -> String {
        super::generate(target).or_raise()
    }
}

extension_sql_file!("../sql/discovery.sql", name = "discovery", requires = ["automation_schema"]);

fn generate(target: pg_sys::Oid) -> Result<String> {
    let (table, relkind) = crate::catalog::describe_relation(target)?;
    if !matches!(relkind.as_str(), "r" | "p" | "f" | "v") {
        return Err(Error::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("{table} is not a table"))
            .with_detail("generate_insert takes a table, a partitioned table, a foreign table or a view."));
    }
    let columns = Spi::connect(|client| {
        client
            .select(
                "SELECT pg_catalog.quote_ident(attname), attgenerated <> '', attidentity = 'a'
                   FROM pg_catalog.pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
                  ORDER BY attnum",
                None,
                &[target.into()],
            )?
            .map(|row| {
                Ok((row.get::<String>(1)?, row.get::<bool>(2)?.unwrap_or(false), row.get::<bool>(3)?.unwrap_or(false)))
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .with_context(|| format!("could not read the columns of {table}"))?
    .into_iter()
    .map(|(quoted, generated, identity_always)| {
        // quote_ident of a column name is never NULL
        let quoted =
            quoted.ok_or_else(|| Error::internal(format!("could not read the columns of {table}"), "NULL name"))?;
        Ok(statement::Column { quoted, generated, identity_always })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(statement::insert(&table, &columns))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn generated(table: &str) -> String {
        Spi::get_one::<String>(&format!("SELECT automation.generate_insert('{table}'::regclass)")).unwrap().unwrap()
    }

    #[pg_test]
    fn the_generated_statement_inserts_a_row() {
        Spi::run(
            "CREATE TABLE public.\"Order Lines\" (
                 id bigint GENERATED ALWAYS AS IDENTITY,
                 \"Qty\" int NOT NULL,
                 \"select\" text,
                 price numeric,
                 total numeric GENERATED ALWAYS AS (\"Qty\" * price) STORED)",
        )
        .unwrap();
        let sql = generated("public.\"Order Lines\"");
        assert_eq!(sql, "INSERT INTO public.\"Order Lines\" (\"Qty\", \"select\", price) VALUES ($1, $2, $3)");
        // and PostgreSQL accepts it, with the parameters in that order
        Spi::run(&format!("PREPARE ins(int, text, numeric) AS {sql}")).unwrap();
        Spi::run("EXECUTE ins(3, 'x', 2.5)").unwrap();
        let total = Spi::get_one::<pgrx::AnyNumeric>("SELECT total FROM public.\"Order Lines\"").unwrap().unwrap();
        assert_eq!(total.to_string(), "7.5");
        Spi::run("DEALLOCATE ins").unwrap();
    }

    #[pg_test(error = "public.s is not a table")]
    fn a_sequence_is_refused() {
        Spi::run("CREATE SEQUENCE public.s").unwrap();
        generated("public.s");
    }
}
