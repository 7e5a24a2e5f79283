//! The workflow definition format (issue 18), parsed and validated without
//! PostgreSQL: `definitions.definition` is refused on INSERT/UPDATE unless it
//! parses here (the trigger in sql/engine.sql calls it through
//! `automation.check_definition`).
//!
//! ```json
//! {"steps": [
//!    {"name": "extract", "queue": "etl", "timeout": "10 minutes",
//!     "retry": {"max_attempts": 5, "backoff": "10 seconds", "max_backoff": "10 minutes"}},
//!    {"name": "load", "after": ["extract"], "sql": "CALL load_batch()"},
//!    {"name": "notify", "after": ["extract"], "queue": "mail", "map": "$.extract.recipients"}],
//!  "timeout": "1 hour", "concurrency": 4}
//! ```
//!
//! A definition without `steps` is free-form data (it stays valid, and
//! cannot be started). With `steps`, every key is known, every step has a
//! unique name and exactly one of `sql` or `queue`, dependencies exist and
//! have no cycle. Interval values are checked here for being strings; their
//! syntax and sign by PostgreSQL's own interval input, at the edge
//! ([`Workflow::intervals`] lists them with where they are).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Longest step name (PostgreSQL's identifier length).
pub const MAX_NAME: usize = 63;
/// Most attempts a step may have.
pub const MAX_ATTEMPTS: i64 = 100;
/// Most steps in one definition.
pub const MAX_STEPS: usize = 1000;

const WORKFLOW_KEYS: &[&str] = &["steps", "timeout", "concurrency", "description"];
const STEP_KEYS: &[&str] = &["name", "after", "sql", "queue", "timeout", "retry", "map", "max_failures", "description"];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "max_backoff"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// run by the extension's workers
    Sql(String),
    /// run by outside workers claiming from this queue
    Queue(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub after: Vec<String>,
    pub run: Run,
    pub timeout: Option<String>,
    pub retry: Option<Retry>,
    /// `$.<dependency>...`: a JSON path into the dependencies' outputs that
    /// yields an array, or (0.8.0) a sequence of matches ([`MapShape`]);
    /// one step run per element
    pub map: Option<String>,
    /// (0.8.0) how many elements of a mapped step may fail (their attempts
    /// used up) before the execution fails; None: the first one fails it
    pub max_failures: Option<MaxFailures>,
}

/// How many failed elements a mapped step tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailures {
    /// at most this many
    Count(u32),
    /// at most this share of the elements (0 < f < 1), rounded down
    Fraction(f64),
}

impl Eq for MaxFailures {}

/// How a `map` path yields the list it maps over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapShape {
    /// a path to one value, which must be an array (`$.fetch.items`)
    Array,
    /// a path that yields a sequence — a wildcard (`[*]`, `.*`, `**`), a
    /// filter (`? (...)`), a slice or list of subscripts, `.keyvalue()`:
    /// the matches, in order, are the list (none: an empty list)
    Sequence,
}

/// Methods that make a path yield one scalar: such a path is never a list.
const SCALAR_METHODS: &[&str] = &[
    "size",
    "type",
    "double",
    "abs",
    "floor",
    "ceiling",
    "datetime",
    "boolean",
    "string",
    "integer",
    "number",
    "bigint",
    "decimal",
    "date",
    "time",
    "time_tz",
    "timestamp",
    "timestamp_tz",
];

/// The shape of a map path (see [`MapShape`]), or why it can never yield a
/// list: a predicate (`$.a.n > 1`, `exists(...)`) or a path ending in a
/// method that yields a scalar (`.size()`, `.type()`...). Looks at the
/// text outside string literals; the path's syntax is PostgreSQL's to check.
pub fn map_shape(path: &str) -> Result<MapShape, String> {
    // the path with string literals blanked out, so that their content is
    // not taken for syntax
    let mut plain = String::with_capacity(path.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in path.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                plain.push('"');
                continue;
            }
            plain.push('_');
        } else {
            if c == '"' {
                in_string = true;
            }
            plain.push(c);
        }
    }
    let compact: String = plain.chars().filter(|c| !c.is_whitespace()).collect();
    let lower = compact.to_lowercase();
    // predicates outside filters: a boolean, never a list
    let mut depth = 0i32;
    let mut top = String::new();
    for c in lower.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ if depth == 0 => top.push(c),
            _ => {}
        }
    }
    let spaced = plain.to_lowercase();
    if ["==", "!=", "<>", "<", ">", "&&", "||"].iter().any(|op| top.contains(op))
        || spaced.contains(" like_regex ")
        || spaced.contains(" starts with ")
        || lower.starts_with("exists(")
        || lower.starts_with('!')
    {
        return Err("is a predicate (it yields true or false), not a path to a list".into());
    }
    let sequence = lower.contains("[*]")
        || lower.contains(".*")
        || lower.contains("**")
        || lower.contains("?(")
        || lower.contains(".keyvalue()")
        || subscripts_select_several(&lower);
    if !sequence {
        if let Some(method) = SCALAR_METHODS.iter().find(|m| {
            lower.ends_with(&format!(".{m}()")) || (lower.ends_with(')') && lower.contains(&format!(".{m}(")))
        }) {
            return Err(format!("ends in .{method}(), which yields one value, never a list"));
        }
    }
    Ok(if sequence { MapShape::Sequence } else { MapShape::Array })
}

/// Does a subscript list select several elements (`[0, 2]`, `[1 to 3]`,
/// `[last]` does not)? `text` is lower-case, without whitespace, so `to`
/// shows as `1to3`.
fn subscripts_select_several(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else { return false };
        let inside = &rest[open + 1..open + close];
        if inside.contains(',') || inside.contains("to") {
            return true;
        }
        rest = &rest[open + close + 1..];
    }
    false
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub steps: Vec<Step>,
    pub timeout: Option<String>,
    pub concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// no `steps`: data, not a runnable workflow
    NoSteps,
    Workflow(Workflow),
}

/// What is wrong, and where: the step (if any) and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub step: Option<String>,
    pub field: String,
    pub problem: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step \"{}\", {}: {}", step, self.field, self.problem),
            None => write!(f, "{}: {}", self.field, self.problem),
        }
    }
}

impl std::error::Error for DefinitionError {}

fn fail<T>(step: Option<&str>, field: impl Into<String>, problem: impl Into<String>) -> Result<T, DefinitionError> {
    Err(DefinitionError { step: step.map(str::to_owned), field: field.into(), problem: problem.into() })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unknown_keys(
    obj: &Map<String, Value>,
    known: &[&str],
    step: Option<&str>,
    field: &str,
) -> Result<(), DefinitionError> {
    // serde_json's map is ordered: the first unknown key in key order
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        let known = known.join(", ");
        let field = if field.is_empty() { k.clone() } else { format!("{field}.{k}") };
        return fail(step, field, format!("unknown key (known keys: {known})"));
    }
    Ok(())
}

fn string(v: &Value, step: Option<&str>, field: &str) -> Result<String, DefinitionError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => fail(step, field, "must not be empty"),
        other => fail(step, field, format!("must be a string, not {}", kind(other))),
    }
}

fn interval(v: Option<&Value>, step: Option<&str>, field: &str) -> Result<Option<String>, DefinitionError> {
    v.map(|v| string(v, step, field)).transpose()
}

fn positive(v: &Value, step: Option<&str>, field: &str, max: i64) -> Result<u32, DefinitionError> {
    match v.as_i64() {
        Some(n) if (1..=max).contains(&n) => Ok(n as u32),
        _ => fail(step, field, format!("must be an integer between 1 and {max}, not {v}")),
    }
}

/// Parse and validate a definition.
pub fn parse(definition: &Value) -> Result<Parsed, DefinitionError> {
    let Value::Object(top) = definition else {
        return fail(None, "definition", format!("must be a JSON object, not {}", kind(definition)));
    };
    let Some(steps) = top.get("steps") else {
        return Ok(Parsed::NoSteps);
    };
    unknown_keys(top, WORKFLOW_KEYS, None, "")?;
    let Value::Array(steps) = steps else {
        return fail(None, "steps", format!("must be an array, not {}", kind(steps)));
    };
    if steps.is_empty() {
        return fail(None, "steps", "must list at least one step");
    }
    if steps.len() > MAX_STEPS {
        return fail(None, "steps", format!("has {} steps; at most {MAX_STEPS}", steps.len()));
    }
    let mut parsed = Vec::with_capacity(steps.len());
    let mut names = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        let s = parse_step(step, i)?;
        if !names.insert(s.name.clone()) {
            return fail(Some(&s.name), "name", "is used by another step; step names must be unique");
        }
        parsed.push(s);
    }
    for s in &parsed {
        for dep in &s.after {
            if !names.contains(dep) {
                return fail(
                    Some(&s.name),
                    "after",
                    format!("depends on \"{dep}\", which is not a step of this workflow"),
                );
            }
            if dep == &s.name {
                return fail(Some(&s.name), "after", "a step cannot depend on itself");
            }
        }
        if let Some(map) = &s.map {
            let root = map_root(map).ok_or_else(|| DefinitionError {
                step: Some(s.name.clone()),
                field: "map".into(),
                problem: format!("must be a JSON path starting with $.<step>, such as $.fetch.items, not {map}"),
            })?;
            if !s.after.contains(&root) {
                return fail(
                    Some(&s.name),
                    "map",
                    format!("reads the output of \"{root}\", which is not in its after list"),
                );
            }
            if let Err(problem) = map_shape(map) {
                return fail(Some(&s.name), "map", format!("{map} {problem}"));
            }
        } else if s.max_failures.is_some() {
            return fail(Some(&s.name), "max_failures", "applies to a mapped step (one with map) only");
        }
    }
    if let Some(cycle) = find_cycle(&parsed) {
        return fail(None, "steps", format!("the dependencies form a cycle: {}", cycle.join(" -> ")));
    }
    let timeout = interval(top.get("timeout"), None, "timeout")?;
    let concurrency =
        top.get("concurrency").map(|v| positive(v, None, "concurrency", i64::from(i32::MAX))).transpose()?;
    Ok(Parsed::Workflow(Workflow { steps: parsed, timeout, concurrency }))
}

fn parse_step(v: &Value, i: usize) -> Result<Step, DefinitionError> {
    let at = format!("steps[{i}]");
    let Value::Object(obj) = v else {
        return fail(None, at, format!("must be an object, not {}", kind(v)));
    };
    let name = match obj.get("name") {
        None => return fail(None, format!("{at}.name"), "is missing; every step needs a name"),
        Some(n) => string(n, None, &format!("{at}.name"))?,
    };
    if name.chars().count() > MAX_NAME {
        return fail(None, format!("{at}.name"), format!("is longer than {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return fail(None, format!("{at}.name"), "must not contain control characters");
    }
    let step = Some(name.as_str());
    unknown_keys(obj, STEP_KEYS, step, "")?;
    let after = match obj.get("after") {
        None => Vec::new(),
        Some(Value::Array(deps)) => {
            let mut out = Vec::with_capacity(deps.len());
            for d in deps {
                let d = string(d, step, "after")?;
                if out.contains(&d) {
                    return fail(step, "after", format!("lists \"{d}\" twice"));
                }
                out.push(d);
            }
            out
        }
        Some(Value::String(d)) => vec![string(&Value::String(d.clone()), step, "after")?],
        Some(other) => return fail(step, "after", format!("must be an array of step names, not {}", kind(other))),
    };
    let run = match (obj.get("sql"), obj.get("queue")) {
        (Some(sql), None) => Run::Sql(string(sql, step, "sql")?),
        (None, Some(queue)) => {
            let q = string(queue, step, "queue")?;
            if q.chars().count() > 255 {
                return fail(step, "queue", "is longer than 255 characters");
            }
            Run::Queue(q)
        }
        (Some(_), Some(_)) => {
            return fail(
                step,
                "sql/queue",
                "has both; a step is either run by the extension (sql) or by outside workers (queue)",
            )
        }
        (None, None) => {
            return fail(
                step,
                "sql/queue",
                "has neither; give the SQL to run (sql) or the queue outside workers claim from (queue)",
            )
        }
    };
    let timeout = interval(obj.get("timeout"), step, "timeout")?;
    let retry = match obj.get("retry") {
        None => None,
        Some(Value::Object(r)) => {
            unknown_keys(r, RETRY_KEYS, step, "retry")?;
            let max_attempts = match r.get("max_attempts") {
                Some(n) => positive(n, step, "retry.max_attempts", MAX_ATTEMPTS)?,
                None => return fail(step, "retry.max_attempts", "is missing"),
            };
            Some(Retry {
                max_attempts,
                backoff: interval(r.get("backoff"), step, "retry.backoff")?,
                max_backoff: interval(r.get("max_backoff"), step, "retry.max_backoff")?,
            })
        }
        Some(other) => return fail(step, "retry", format!("must be an object, not {}", kind(other))),
    };
    let map = obj.get("map").map(|m| string(m, step, "map")).transpose()?;
    let max_failures = match obj.get("max_failures") {
        None => None,
        Some(v) => Some(max_failures(v, step)?),
    };
    Ok(Step { name, after, run, timeout, retry, map, max_failures })
}

/// `max_failures`: a count (an integer, 0 or more) or a share of the
/// elements (a number between 0 and 1, such as 0.05).
fn max_failures(v: &Value, step: Option<&str>) -> Result<MaxFailures, DefinitionError> {
    if let Some(n) = v.as_u64() {
        if n <= u64::from(i32::MAX as u32) {
            return Ok(MaxFailures::Count(n as u32));
        }
    }
    match v.as_f64() {
        Some(f) if f > 0.0 && f < 1.0 => Ok(MaxFailures::Fraction(f)),
        _ => fail(
            step,
            "max_failures",
            format!("must be a count of elements (an integer, 0 or more) or a share of them (a number between 0 and 1, such as 0.05), not {v}"),
        ),
    }
}

/// The step a `map` path reads: `$.name...` or `$."name"...`.
fn map_root(path: &str) -> Option<String> {
    let rest = path.trim().strip_prefix("$.")?;
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some(quoted[..end].to_owned()).filter(|s| !s.is_empty());
    }
    let end = rest.find(|c: char| c == '.' || c == '[' || c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].to_owned()).filter(|s| !s.is_empty())
}

/// A cycle among the steps' dependencies, as step names (first = last), or
/// None. Kahn's algorithm removes every step that can be ordered; a walk
/// along the dependencies of what is left must come back to a step it saw.
fn find_cycle(steps: &[Step]) -> Option<Vec<String>> {
    let mut waiting: BTreeMap<&str, usize> = steps.iter().map(|s| (s.name.as_str(), s.after.len())).collect();
    let mut ready: Vec<&str> = waiting.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    while let Some(done) = ready.pop() {
        waiting.remove(done);
        for s in steps.iter().filter(|s| s.after.iter().any(|d| d == done)) {
            if let Some(n) = waiting.get_mut(s.name.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.push(s.name.as_str());
                }
            }
        }
    }
    let start = *waiting.keys().next()?;
    let by_name: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut path: Vec<&str> = vec![start];
    loop {
        let here = by_name[path.last().expect("not empty")];
        // a dependency that is itself left over (one must be: it could not be ordered)
        let next = here.after.iter().map(String::as_str).find(|d| waiting.contains_key(d))?;
        if let Some(at) = path.iter().position(|p| *p == next) {
            // dependencies point backwards in time: print the cycle in run order
            let mut cycle: Vec<String> = path[at..].iter().rev().map(|s| (*s).to_owned()).collect();
            // from its first name in sort order, so the message is stable
            let first = (0..cycle.len()).min_by_key(|&i| &cycle[i]).expect("not empty");
            cycle.rotate_left(first);
            cycle.push(cycle[0].clone());
            return Some(cycle);
        }
        path.push(next);
    }
}

impl Workflow {
    /// Every interval-valued field, with the step it belongs to and its
    /// name, for PostgreSQL to check.
    pub fn intervals(&self) -> Vec<(Option<&str>, &'static str, &str)> {
        let mut out = Vec::new();
        if let Some(t) = &self.timeout {
            out.push((None, "timeout", t.as_str()));
        }
        for s in &self.steps {
            if let Some(t) = &s.timeout {
                out.push((Some(s.name.as_str()), "timeout", t.as_str()));
            }
            if let Some(r) = &s.retry {
                if let Some(b) = &r.backoff {
                    out.push((Some(s.name.as_str()), "retry.backoff", b.as_str()));
                }
                if let Some(b) = &r.max_backoff {
                    out.push((Some(s.name.as_str()), "retry.max_backoff", b.as_str()));
                }
            }
        }
        out
    }
}

/// How deep a definition may nest (objects and arrays): a workflow needs a
/// handful of levels; the JSON parser's own limit is 128.
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting of objects and arrays in JSON text (brackets inside
/// strings do not count). Pure, so that it runs before any parser.
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        parse(&v).expect_err("refused").to_string()
    }

    fn ok(v: Value) -> Workflow {
        match parse(&v).expect("valid") {
            Parsed::Workflow(w) => w,
            Parsed::NoSteps => panic!("no steps"),
        }
    }

    #[test]
    fn without_steps_it_is_data() {
        assert_eq!(parse(&json!({})), Ok(Parsed::NoSteps));
        assert_eq!(parse(&json!({"schedule": "@daily", "anything": [1, 2]})), Ok(Parsed::NoSteps));
        assert_eq!(err(json!([1])), "definition: must be a JSON object, not an array");
    }

    #[test]
    fn a_diamond_parses() {
        let w = ok(json!({"steps": [
            {"name": "d", "after": ["b", "c"], "sql": "SELECT 4"},
            {"name": "b", "after": ["a"], "queue": "q"},
            {"name": "c", "after": "a", "sql": "SELECT 3", "timeout": "5 s",
             "retry": {"max_attempts": 3, "backoff": "1 s", "max_backoff": "1 min"}},
            {"name": "a", "sql": "SELECT 1"}],
            "timeout": "1 hour", "concurrency": 2, "description": "x"}));
        let names: Vec<&str> = w.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["d", "b", "c", "a"]);
        assert_eq!(w.steps[0].after, ["b", "c"]);
        assert_eq!(w.steps[1].run, Run::Queue("q".into()));
        assert_eq!(w.concurrency, Some(2));
        assert_eq!(
            w.steps[2].retry,
            Some(Retry { max_attempts: 3, backoff: Some("1 s".into()), max_backoff: Some("1 min".into()) })
        );
        assert_eq!(
            w.intervals(),
            vec![
                (None, "timeout", "1 hour"),
                (Some("c"), "timeout", "5 s"),
                (Some("c"), "retry.backoff", "1 s"),
                (Some("c"), "retry.max_backoff", "1 min"),
            ]
        );
    }

    #[test]
    fn every_mistake_names_its_step_and_field() {
        let cases = [
            (json!({"steps": {}}), "steps: must be an array, not an object"),
            (json!({"steps": []}), "steps: must list at least one step"),
            (json!({"steps": [1]}), "steps[0]: must be an object, not a number"),
            (json!({"steps": [{"sql": "x"}]}), "steps[0].name: is missing; every step needs a name"),
            (json!({"steps": [{"name": "", "sql": "x"}]}), "steps[0].name: must not be empty"),
            (json!({"steps": [{"name": "a", "sql": "x"}, {"name": "a", "sql": "y"}]}),
             "step \"a\", name: is used by another step; step names must be unique"),
            (json!({"steps": [{"name": "a", "sql": "x", "after": ["zz"]}]}),
             "step \"a\", after: depends on \"zz\", which is not a step of this workflow"),
            (json!({"steps": [{"name": "a", "sql": "x", "after": ["a"]}]}), "step \"a\", after: a step cannot depend on itself"),
            (json!({"steps": [{"name": "a", "sql": "x", "queue": "q"}]}),
             "step \"a\", sql/queue: has both; a step is either run by the extension (sql) or by outside workers (queue)"),
            (json!({"steps": [{"name": "a"}]}),
             "step \"a\", sql/queue: has neither; give the SQL to run (sql) or the queue outside workers claim from (queue)"),
            (json!({"steps": [{"name": "a", "sql": "x", "retries": 3}]}),
             "step \"a\", retries: unknown key (known keys: name, after, sql, queue, timeout, retry, map, max_failures, description)"),
            (json!({"steps": [{"name": "a", "sql": "x"}], "timeuot": "1 s"}),
             "timeuot: unknown key (known keys: steps, timeout, concurrency, description)"),
            (json!({"steps": [{"name": "a", "sql": "x", "retry": {"max_attempts": 0}}]}),
             "step \"a\", retry.max_attempts: must be an integer between 1 and 100, not 0"),
            (json!({"steps": [{"name": "a", "sql": "x", "retry": {"backoff": "1 s"}}]}), "step \"a\", retry.max_attempts: is missing"),
            (json!({"steps": [{"name": "a", "sql": "x", "retry": {"max_attempts": 2, "jitter": true}}]}),
             "step \"a\", retry.jitter: unknown key (known keys: max_attempts, backoff, max_backoff)"),
            (json!({"steps": [{"name": "a", "sql": "x", "timeout": 5}]}), "step \"a\", timeout: must be a string, not a number"),
            (json!({"steps": [{"name": "a", "sql": 1}]}), "step \"a\", sql: must be a string, not a number"),
            (json!({"steps": [{"name": "a", "sql": "x"}], "concurrency": 0}),
             "concurrency: must be an integer between 1 and 2147483647, not 0"),
            (json!({"steps": [{"name": "a", "queue": "q"}, {"name": "b", "queue": "q", "after": ["a"], "map": "items"}]}),
             "step \"b\", map: must be a JSON path starting with $.<step>, such as $.fetch.items, not items"),
            (json!({"steps": [{"name": "a", "queue": "q"}, {"name": "b", "queue": "q", "map": "$.a.items"}]}),
             "step \"b\", map: reads the output of \"a\", which is not in its after list"),
            (json!({"steps": [{"name": "a", "queue": "q", "after": ["b", "b"]}, {"name": "b", "queue": "q"}]}),
             "step \"a\", after: lists \"b\" twice"),
        ];
        for (definition, expected) in cases {
            assert_eq!(err(definition.clone()), expected, "{definition}");
        }
    }

    #[test]
    fn a_cycle_is_named() {
        let e = err(json!({"steps": [
            {"name": "start", "sql": "x"},
            {"name": "a", "after": ["start", "c"], "sql": "x"},
            {"name": "b", "after": ["a"], "sql": "x"},
            {"name": "c", "after": ["b"], "sql": "x"},
            {"name": "after_cycle", "after": ["c"], "sql": "x"}]}));
        assert_eq!(e, "steps: the dependencies form a cycle: a -> b -> c -> a");
        let e = err(
            json!({"steps": [{"name": "x", "after": ["y"], "sql": "1"}, {"name": "y", "after": ["x"], "sql": "1"}]}),
        );
        assert_eq!(e, "steps: the dependencies form a cycle: x -> y -> x");
    }

    #[test]
    fn map_shapes() {
        assert_eq!(map_shape("$.fetch.items"), Ok(MapShape::Array));
        assert_eq!(map_shape("$.fetch"), Ok(MapShape::Array));
        assert_eq!(map_shape("$.fetch.items[*]"), Ok(MapShape::Sequence));
        assert_eq!(map_shape(r#"$.extract.items[*] ? (@.kind == "domestic")"#), Ok(MapShape::Sequence));
        assert_eq!(map_shape("$.f.items[0, 2]"), Ok(MapShape::Sequence));
        assert_eq!(map_shape("$.f.items[1 to 3]"), Ok(MapShape::Sequence));
        assert_eq!(map_shape("$.f.items[last]"), Ok(MapShape::Array));
        assert_eq!(map_shape("$.f.*"), Ok(MapShape::Sequence));
        assert_eq!(map_shape("$.f.**"), Ok(MapShape::Sequence));
        assert_eq!(map_shape("$.f.byid.keyvalue()"), Ok(MapShape::Sequence));
        // never a list
        assert!(map_shape("$.f.items.size()").unwrap_err().contains(".size()"));
        assert!(map_shape("$.f.kind.type()").unwrap_err().contains(".type()"));
        assert!(map_shape("$.f.items.size() > 1").unwrap_err().contains("predicate"));
        assert!(map_shape("exists($.f.items)").unwrap_err().contains("predicate"));
        assert!(map_shape(r#"$.f.name like_regex "^a""#).unwrap_err().contains("predicate"));
        // what is inside a string is not syntax
        assert_eq!(map_shape(r#"$.f."a > b""#), Ok(MapShape::Array));
        assert_eq!(map_shape(r#"$.f."x[*]""#), Ok(MapShape::Array));
        // a method on each element of a sequence: still a list
        assert_eq!(map_shape("$.f.items[*].size()"), Ok(MapShape::Sequence));
    }

    #[test]
    fn max_failures_is_a_count_or_a_share() {
        let ok = |mf: Value| {
            parse(&json!({"steps": [{"name": "f", "queue": "q"},
                                    {"name": "m", "after": ["f"], "queue": "q", "map": "$.f", "max_failures": mf}]}))
        };
        let Ok(Parsed::Workflow(w)) = ok(json!(3)) else { panic!() };
        assert_eq!(w.steps[1].max_failures, Some(MaxFailures::Count(3)));
        let Ok(Parsed::Workflow(w)) = ok(json!(0.05)) else { panic!() };
        assert_eq!(w.steps[1].max_failures, Some(MaxFailures::Fraction(0.05)));
        for bad in [json!(-1), json!(1.5), json!("2"), json!(0.0)] {
            assert!(ok(bad.clone()).unwrap_err().to_string().contains("max_failures: must be a count"), "{bad}");
        }
        let e = parse(&json!({"steps": [{"name": "a", "queue": "q", "max_failures": 1}]})).unwrap_err();
        assert_eq!(e.to_string(), "step \"a\", max_failures: applies to a mapped step (one with map) only");
        let e = parse(&json!({"steps": [{"name": "f", "queue": "q"},
                                        {"name": "m", "after": ["f"], "queue": "q", "map": "$.f.items.size()"}]}))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "step \"m\", map: $.f.items.size() ends in .size(), which yields one value, never a list"
        );
    }

    #[test]
    fn map_paths() {
        assert_eq!(map_root("$.fetch.items"), Some("fetch".into()));
        assert_eq!(map_root("$.fetch"), Some("fetch".into()));
        assert_eq!(map_root("$.fetch[*]"), Some("fetch".into()));
        assert_eq!(map_root("$.\"my step\".rows"), Some("my step".into()));
        assert_eq!(map_root("fetch.items"), None);
        assert_eq!(map_root("$."), None);
        let w = ok(
            json!({"steps": [{"name": "f", "queue": "q"}, {"name": "m", "after": ["f"], "queue": "q", "map": "$.f.items"}]}),
        );
        assert_eq!(w.steps[1].map.as_deref(), Some("$.f.items"));
    }

    #[test]
    fn a_long_chain_is_fine() {
        let steps: Vec<Value> = (0..MAX_STEPS)
            .map(|i| {
                if i == 0 {
                    json!({"name": "s0", "sql": "x"})
                } else {
                    json!({"name": format!("s{i}"), "after": [format!("s{}", i - 1)], "sql": "x"})
                }
            })
            .collect();
        let w = ok(json!({ "steps": steps }));
        assert_eq!(w.steps.len(), MAX_STEPS);
        // the same chain closed into a ring is one cycle of 1,000 steps
        let mut ring: Vec<Value> = (0..MAX_STEPS).map(|i| json!({"name": format!("s{i}"), "after": [format!("s{}", (i + MAX_STEPS - 1) % MAX_STEPS)], "sql": "x"})).collect();
        ring.truncate(MAX_STEPS);
        let e = err(json!({ "steps": ring }));
        assert!(e.starts_with("steps: the dependencies form a cycle: s0 -> s1 -> s2 -> "), "{}", &e[..80]);
        assert!(e.ends_with("s998 -> s999 -> s0"), "{}", &e[e.len() - 40..]);
        let too_many: Vec<Value> = (0..=MAX_STEPS).map(|i| json!({"name": format!("s{i}"), "sql": "x"})).collect();
        assert_eq!(err(json!({ "steps": too_many })), "steps: has 1001 steps; at most 1000");
    }

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert_eq!(super::nesting_depth("{}"), 1);
        assert_eq!(super::nesting_depth(r#"{"steps": [{"name": "a"}]}"#), 3);
        assert_eq!(super::nesting_depth(r#"{"a": "[[[[{{{"}"#), 1, "brackets in strings do not count");
        assert_eq!(super::nesting_depth(r#"{"a": "\\\"[["}"#), 1, "an escaped quote does not end the string");
        assert_eq!(super::nesting_depth("1"), 0);
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(super::nesting_depth(&deep), 200);
    }
}
