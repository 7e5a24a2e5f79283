-- pipeline_success_rate: support functions (src/success_rate.rs) and the
-- aggregates. Hand-written because the state is `internal` and pgrx's
-- generated deserialize signature is wrong for that case (pgrx#2351).

CREATE FUNCTION automation.success_rate_sfunc(internal, text) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE CALLED ON NULL INPUT
    AS 'MODULE_PATHNAME', 'success_rate_sfunc_wrapper';
CREATE FUNCTION automation.success_rate_minvfunc(internal, text) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE CALLED ON NULL INPUT
    AS 'MODULE_PATHNAME', 'success_rate_minvfunc_wrapper';
CREATE FUNCTION automation.success_rate_combine(internal, internal) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE CALLED ON NULL INPUT
    AS 'MODULE_PATHNAME', 'success_rate_combine_wrapper';
CREATE FUNCTION automation.success_rate_serialize(internal) RETURNS bytea
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'success_rate_serialize_wrapper';
CREATE FUNCTION automation.success_rate_deserialize(bytea, internal) RETURNS internal
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'success_rate_deserialize_wrapper';
CREATE FUNCTION automation.success_rate_final(internal) RETURNS numeric
    LANGUAGE c IMMUTABLE PARALLEL SAFE CALLED ON NULL INPUT
    AS 'MODULE_PATHNAME', 'success_rate_final_wrapper';

-- One aggregate per input type; varchar is binary-compatible with text, so
-- both share the support functions.
CREATE AGGREGATE automation.pipeline_success_rate(text) (
    SFUNC = automation.success_rate_sfunc,
    STYPE = internal,
    SSPACE = 16,
    FINALFUNC = automation.success_rate_final,
    COMBINEFUNC = automation.success_rate_combine,
    SERIALFUNC = automation.success_rate_serialize,
    DESERIALFUNC = automation.success_rate_deserialize,
    MSFUNC = automation.success_rate_sfunc,
    MINVFUNC = automation.success_rate_minvfunc,
    MSTYPE = internal,
    MSSPACE = 16,
    MFINALFUNC = automation.success_rate_final,
    PARALLEL = SAFE
);

CREATE AGGREGATE automation.pipeline_success_rate(varchar) (
    SFUNC = automation.success_rate_sfunc,
    STYPE = internal,
    SSPACE = 16,
    FINALFUNC = automation.success_rate_final,
    COMBINEFUNC = automation.success_rate_combine,
    SERIALFUNC = automation.success_rate_serialize,
    DESERIALFUNC = automation.success_rate_deserialize,
    MSFUNC = automation.success_rate_sfunc,
    MINVFUNC = automation.success_rate_minvfunc,
    MSTYPE = internal,
    MSSPACE = 16,
    MFINALFUNC = automation.success_rate_final,
    PARALLEL = SAFE
);

COMMENT ON AGGREGATE automation.pipeline_success_rate(text) IS
'Percentage of rows whose status is exactly ''success'', as numeric rounded to 2 decimals; every row counts (NULL statuses too); NULL for no rows. Parallel-safe, with an inverse for sliding window frames.';
COMMENT ON AGGREGATE automation.pipeline_success_rate(varchar) IS
'Percentage of rows whose status is exactly ''success'', as numeric rounded to 2 decimals; every row counts (NULL statuses too); NULL for no rows. Parallel-safe, with an inverse for sliding window frames.';

-- 0.3.0: the support functions take `internal` and are only for the
-- aggregate (whose execution checks the aggregate's owner, not the caller,
-- for them): nobody calls them directly.
REVOKE EXECUTE ON FUNCTION automation.success_rate_sfunc(internal, text), automation.success_rate_minvfunc(internal, text),
       automation.success_rate_combine(internal, internal), automation.success_rate_serialize(internal),
       automation.success_rate_deserialize(bytea, internal), automation.success_rate_final(internal) FROM PUBLIC;
