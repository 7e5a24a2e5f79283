//! Timelines: the step runs of an execution (a Gantt chart) and the runs of
//! a job, as bars placed in percent of the span they cover. Pure.

use serde::Serialize;

/// Something that ran from `start` to `end` (seconds since an epoch of the
/// caller's choosing; `end` None: still running, until `now`).
#[derive(Debug, Clone)]
pub struct Span {
    pub label: String,
    pub start: f64,
    pub end: Option<f64>,
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bar {
    pub label: String,
    pub status: String,
    pub detail: String,
    /// left edge and width, in percent of the chart
    pub left: f64,
    pub width: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Chart {
    pub bars: Vec<Bar>,
    /// the span the chart covers, in seconds
    pub total: f64,
}

/// Bars for `spans` within their overall span (at least 1 ms wide, so that
/// an instant shows).
pub fn chart(spans: &[Span], now: f64) -> Chart {
    let start = spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    let end = spans.iter().map(|s| s.end.unwrap_or(now).max(s.start)).fold(f64::NEG_INFINITY, f64::max);
    if spans.is_empty() || !start.is_finite() || !end.is_finite() {
        return Chart { bars: Vec::new(), total: 0.0 };
    }
    let total = (end - start).max(0.001);
    let bars = spans
        .iter()
        .map(|s| {
            let e = s.end.unwrap_or(now).max(s.start);
            let left = (s.start - start) / total * 100.0;
            let width = ((e - s.start) / total * 100.0).max(0.4).min(100.0 - left).max(0.0);
            Bar {
                label: s.label.clone(),
                status: s.status.clone(),
                detail: s.detail.clone(),
                left: (left * 100.0).round() / 100.0,
                width: (width * 100.0).round() / 100.0,
                seconds: ((e - s.start) * 1000.0).round() / 1000.0,
            }
        })
        .collect();
    Chart { bars, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(label: &str, start: f64, end: Option<f64>) -> Span {
        Span { label: label.into(), start, end, status: "success".into(), detail: String::new() }
    }

    #[test]
    fn bars_cover_their_share_of_the_span() {
        let c = chart(&[span("a", 10.0, Some(12.0)), span("b", 12.0, Some(20.0)), span("c", 15.0, None)], 30.0);
        assert_eq!(c.total, 20.0);
        assert_eq!((c.bars[0].left, c.bars[0].width, c.bars[0].seconds), (0.0, 10.0, 2.0));
        assert_eq!((c.bars[1].left, c.bars[1].width), (10.0, 40.0));
        // still running: until now
        assert_eq!((c.bars[2].left, c.bars[2].width, c.bars[2].seconds), (25.0, 75.0, 15.0));
    }

    #[test]
    fn instants_and_nothing_still_draw() {
        assert!(chart(&[], 1.0).bars.is_empty());
        let c = chart(&[span("x", 5.0, Some(5.0))], 5.0);
        assert_eq!(c.bars.len(), 1);
        assert!(c.bars[0].width > 0.0);
        // an end before the start (clock skew) is the start
        let c = chart(&[span("y", 5.0, Some(4.0)), span("z", 5.0, Some(6.0))], 6.0);
        assert_eq!(c.bars[0].seconds, 0.0);
    }
}
