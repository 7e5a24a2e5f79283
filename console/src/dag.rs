//! The layout of a workflow's steps as a graph: pure, no I/O.
//!
//! Steps go in columns by depth (the longest chain of `after` before them),
//! rows in definition order within a column; edges run from a dependency
//! to its dependant. The page draws it as SVG (boxes, curved edges), each
//! box coloured by the status of its step in an execution.

use std::collections::BTreeMap;

use serde::Serialize;

/// A step as the definition gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub after: Vec<String>,
    /// `sql`, or the queue outside workers claim it from
    pub kind: String,
    pub map: Option<String>,
}

/// A placed step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub name: String,
    pub kind: String,
    pub map: Option<String>,
    pub column: usize,
    pub row: usize,
    pub x: f64,
    pub y: f64,
    /// the status of the step in an execution (`done`, `running`, ...), or
    /// `none` for a definition without one
    pub status: String,
}

/// An edge, as an SVG path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layout {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: f64,
    pub height: f64,
}

pub const NODE_W: f64 = 170.0;
pub const NODE_H: f64 = 44.0;
const GAP_X: f64 = 60.0;
const GAP_Y: f64 = 18.0;
const MARGIN: f64 = 10.0;

/// The steps of a definition (`{"steps": [...]}`); none for data.
pub fn steps_of(definition: &serde_json::Value) -> Vec<Step> {
    definition
        .get("steps")
        .and_then(|s| s.as_array())
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| {
                    let name = s.get("name")?.as_str()?.to_owned();
                    let after = match s.get("after") {
                        Some(serde_json::Value::Array(a)) => {
                            a.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect()
                        }
                        Some(serde_json::Value::String(d)) => vec![d.clone()],
                        _ => Vec::new(),
                    };
                    let kind = match (s.get("sql"), s.get("queue").and_then(|q| q.as_str())) {
                        (Some(_), _) => "sql".to_owned(),
                        (None, Some(q)) => format!("queue {q}"),
                        _ => "?".to_owned(),
                    };
                    let map = s.get("map").and_then(|m| m.as_str()).map(str::to_owned);
                    Some(Step { name, after, kind, map })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Depth of each step: 0 without dependencies, else 1 + the deepest
/// dependency. A cycle (which the extension refuses) or an unknown
/// dependency counts as depth 0, so that any input lays out.
fn depths(steps: &[Step]) -> BTreeMap<&str, usize> {
    let by_name: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a Step>,
        depth: &mut BTreeMap<&'a str, usize>,
        on_path: &mut Vec<&'a str>,
    ) -> usize {
        if let Some(d) = depth.get(name) {
            return *d;
        }
        if on_path.contains(&name) {
            return 0;
        }
        on_path.push(name);
        let d = by_name
            .get(name)
            .map(|s| {
                s.after
                    .iter()
                    .filter(|dep| by_name.contains_key(dep.as_str()))
                    .map(|dep| visit(dep, by_name, depth, on_path) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        on_path.pop();
        depth.insert(name, d);
        d
    }
    for s in steps {
        visit(&s.name, &by_name, &mut depth, &mut Vec::new());
    }
    depth
}

/// Lay the steps out; `status` gives each step's status in an execution.
pub fn layout(steps: &[Step], status: &dyn Fn(&str) -> String) -> Layout {
    let depth = depths(steps);
    let mut rows_in: BTreeMap<usize, usize> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(steps.len());
    for s in steps {
        let column = depth.get(s.name.as_str()).copied().unwrap_or(0);
        let row = {
            let r = rows_in.entry(column).or_insert(0);
            *r += 1;
            *r - 1
        };
        nodes.push(Node {
            name: s.name.clone(),
            kind: s.kind.clone(),
            map: s.map.clone(),
            column,
            row,
            x: MARGIN + column as f64 * (NODE_W + GAP_X),
            y: MARGIN + row as f64 * (NODE_H + GAP_Y),
            status: status(&s.name),
        });
    }
    let at: BTreeMap<&str, (f64, f64)> = nodes.iter().map(|n| (n.name.as_str(), (n.x, n.y))).collect();
    let mut edges = Vec::new();
    for s in steps {
        for dep in &s.after {
            if let (Some(&(fx, fy)), Some(&(tx, ty))) = (at.get(dep.as_str()), at.get(s.name.as_str())) {
                let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2.0);
                let (x2, y2) = (tx, ty + NODE_H / 2.0);
                let mid = (x1 + x2) / 2.0;
                edges.push(Edge {
                    from: dep.clone(),
                    to: s.name.clone(),
                    path: format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}"),
                });
            }
        }
    }
    let columns = nodes.iter().map(|n| n.column + 1).max().unwrap_or(0);
    let rows = rows_in.values().copied().max().unwrap_or(0);
    Layout {
        nodes,
        edges,
        width: 2.0 * MARGIN + columns as f64 * NODE_W + columns.saturating_sub(1) as f64 * GAP_X,
        height: 2.0 * MARGIN + rows as f64 * NODE_H + rows.saturating_sub(1) as f64 * GAP_Y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none(_: &str) -> String {
        "none".into()
    }

    #[test]
    fn a_diamond_takes_three_columns() {
        let steps = steps_of(&json!({"steps": [
            {"name": "extract", "queue": "etl"},
            {"name": "a", "after": ["extract"], "sql": "x"},
            {"name": "b", "after": "extract", "queue": "mail", "map": "$.extract.items"},
            {"name": "load", "after": ["a", "b"], "sql": "y"}]}));
        let l = layout(&steps, &none);
        let col = |n: &str| l.nodes.iter().find(|x| x.name == n).unwrap().column;
        assert_eq!((col("extract"), col("a"), col("b"), col("load")), (0, 1, 1, 2));
        let b = l.nodes.iter().find(|x| x.name == "b").unwrap();
        assert_eq!((b.row, b.kind.as_str(), b.map.as_deref()), (1, "queue mail", Some("$.extract.items")));
        assert_eq!(l.edges.len(), 4);
        assert!(l.edges.iter().all(|e| e.path.starts_with('M')));
        assert_eq!(l.width, 2.0 * MARGIN + 3.0 * NODE_W + 2.0 * GAP_X);
        assert_eq!(l.height, 2.0 * MARGIN + 2.0 * NODE_H + GAP_Y);
    }

    #[test]
    fn depth_is_the_longest_chain_not_the_shortest() {
        let steps = steps_of(&json!({"steps": [
            {"name": "s", "sql": "x"}, {"name": "m", "after": ["s"], "sql": "x"},
            {"name": "t", "after": ["s", "m"], "sql": "x"}]}));
        let l = layout(&steps, &none);
        assert_eq!(l.nodes.iter().find(|x| x.name == "t").unwrap().column, 2);
    }

    #[test]
    fn data_cycles_and_unknown_dependencies_still_lay_out() {
        assert!(layout(&steps_of(&json!({"anything": 1})), &none).nodes.is_empty());
        let steps = steps_of(&json!({"steps": [
            {"name": "a", "after": ["b"], "sql": "x"}, {"name": "b", "after": ["a"], "sql": "x"},
            {"name": "c", "after": ["nope"], "queue": "q"}]}));
        let l = layout(&steps, &|n| if n == "a" { "failed".into() } else { "done".into() });
        assert_eq!(l.nodes.len(), 3);
        assert_eq!(l.nodes[0].status, "failed");
        assert_eq!(l.nodes.iter().find(|x| x.name == "c").unwrap().column, 0);
    }
}
