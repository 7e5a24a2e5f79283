#!/usr/bin/env bash
# Benchmark for issue "native monitoring": the cost of one sample with many
# tables. Creates N user tables (default 2,000; each with a primary key and
# 100 rows), then times automation.collect_database_metrics() and
# automation.health_check() R times each (median). The seed's own
# collect_database_metrics is tried in the same run: on PostgreSQL 15 it
# fails, and the error is printed as its result.
#
# Needs the cluster scripts/setup.sh prepared. Usage: bash bench/monitoring.sh [tables] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
TABLES=${1:-2000}
ROUNDS=${2:-10}
DB=automation_bench
recreate_database "$DB"
psql_admin -d "$DB" -q <<SQL >/dev/null
SET client_min_messages = warning;
CREATE EXTENSION automation_ext;
DO \$\$
BEGIN
    FOR i IN 1..$TABLES LOOP
        EXECUTE format('CREATE TABLE public.%I (id int PRIMARY KEY, v text)', 't' || i);
        EXECUTE format('INSERT INTO public.%I SELECT g, md5(g::text) FROM generate_series(1, 100) g', 't' || i);
    END LOOP;
END
\$\$;
ANALYZE;
-- the seed's function, verbatim
CREATE TABLE public.database_monitoring (check_time TIMESTAMPTZ PRIMARY KEY DEFAULT NOW(), active_connections INTEGER,
    cache_hit_ratio NUMERIC, index_hit_ratio NUMERIC, table_sizes JSONB, long_running_queries INTEGER, replication_lag INTERVAL);
CREATE OR REPLACE FUNCTION public.collect_database_metrics() RETURNS VOID AS \$\$ DECLARE v_active_connections INTEGER; v_cache_hit_ratio NUMERIC; v_index_hit_ratio NUMERIC; v_table_sizes JSONB; v_long_running INTEGER; BEGIN SELECT COUNT(*) INTO v_active_connections FROM pg_stat_activity WHERE state = 'active'; SELECT ROUND( (sum(heap_blks_hit) / NULLIF(sum(heap_blks_hit) + sum(heap_blks_read), 0) * 100)::NUMERIC, 2 ) INTO v_cache_hit_ratio FROM pg_statio_user_tables; SELECT jsonb_object_agg( schemaname || '.' || tablename, pg_size_pretty(pg_total_relation_size(schemaname || '.' || tablename)) ) INTO v_table_sizes FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY pg_total_relation_size(schemaname || '.' || tablename) DESC LIMIT 10; INSERT INTO database_monitoring ( active_connections, cache_hit_ratio, index_hit_ratio, table_sizes, long_running_queries ) VALUES ( v_active_connections, v_cache_hit_ratio, v_index_hit_ratio, v_table_sizes, v_long_running ); END; \$\$ LANGUAGE plpgsql;
SQL

time_call() { # sql -> ms
    psql_admin -d "$DB" -At <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
\\o /dev/null
\\timing on
$1;
SQL
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
time_call "SELECT automation.collect_database_metrics()" >/dev/null  # warm the catalog caches
collect=$(for _ in $(seq 1 "$ROUNDS"); do time_call "SELECT automation.collect_database_metrics()"; done | median)
health=$(for _ in $(seq 1 "$ROUNDS"); do time_call "SELECT * FROM automation.health_check()"; done | median)
seed=$(psql_admin -d "$DB" -Atc "SELECT public.collect_database_metrics()" 2>&1 | head -1 || true)
echo
echo "one sample with $TABLES user tables, median of $ROUNDS calls:"
echo "  automation.collect_database_metrics()   $collect ms   (goal <= 250 ms)"
echo "  automation.health_check()               $health ms"
echo "  the seed's collect_database_metrics()   ${seed:-ran}"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), PostgreSQL $(psql_admin -Atc 'SHOW server_version')"
psql_admin -qc "DROP DATABASE $DB" >/dev/null
