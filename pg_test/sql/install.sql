-- CREATE EXTENSION creates the four schemas and the contract's tables.
CREATE EXTENSION automation_ext;

SELECT extname, extversion, extrelocatable, extnamespace::regnamespace AS schema
  FROM pg_extension WHERE extname = 'automation_ext';

-- schemas owned by the extension
SELECT n.nspname
  FROM pg_depend d JOIN pg_namespace n ON n.oid = d.objid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'automation_ext')
   AND d.classid = 'pg_namespace'::regclass AND d.deptype = 'e'
 ORDER BY 1;

-- tables (r = plain, p = partitioned) and their columns
SELECT c.oid::regclass AS table_name, c.relkind,
       string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                  || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                  || coalesce(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                  ', ' ORDER BY a.attnum) AS columns
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
 WHERE n.nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
   AND c.relkind IN ('r', 'p')
 GROUP BY c.oid, c.relkind
 ORDER BY c.oid::regclass::text;

-- the indexes, including the seed's GIN, BRIN, composite, lower() and partial ones
SELECT schemaname, tablename, indexname, indexdef
  FROM pg_indexes
 WHERE schemaname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
 ORDER BY schemaname, tablename, indexname;

-- CHECK and FOREIGN KEY constraints
SELECT conrelid::regclass AS table_name, conname, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE contype IN ('c', 'f')
   AND connamespace::regnamespace::text IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit')
 ORDER BY conrelid::regclass::text, conname;

-- user data in extension tables is dumped by pg_dump
SELECT dumped
  FROM (SELECT unnest(extconfig)::regclass::text AS dumped
          FROM pg_extension WHERE extname = 'automation_ext') config
 ORDER BY dumped;

-- The extension is "in" pg_catalog only so its install script runs with a
-- safe search_path: no member object may live anywhere but our four schemas.
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS stray_member
  FROM pg_depend d
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'automation_ext')
   AND d.deptype = 'e'
   AND coalesce(
         CASE d.classid
           WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
           WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid)
           WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
           WHEN 'pg_operator'::regclass THEN (SELECT oprnamespace FROM pg_operator WHERE oid = d.objid)
           WHEN 'pg_namespace'::regclass THEN d.objid
         END, 0)::regnamespace::text
       NOT IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit');

-- the library is preloaded on this cluster
SELECT 'automation_ext' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
       AS preloaded;
