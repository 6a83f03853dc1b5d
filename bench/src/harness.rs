//! Runs each case's subjects alternately (ours and the anchors, round-robin)
//! so machine noise hits all of them alike, and collects the results.

use serde::Serialize;

use crate::stats::Summary;

/// Whether a larger figure is better (IOPS, MB/s) or a smaller one (latency, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Better {
    Higher,
    Lower,
}

/// One thing measured in a case: ours, an anchor, or the physical limit.
pub struct Subject<'a> {
    pub name: String,
    /// Runs one sample, returning the figure.
    pub run: Box<dyn FnMut() -> Result<f64, String> + 'a>,
}

/// One row group of the table: a workload run against several subjects.
pub struct Case<'a> {
    pub suite: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    /// The subject ratios are computed against (an anchor's name).
    pub baseline: String,
    pub subjects: Vec<Subject<'a>>,
}

/// Result of one subject in one case.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub suite: &'static str,
    pub case: String,
    pub subject: String,
    pub unit: &'static str,
    pub better: Better,
    pub baseline: String,
    pub summary: Option<Summary>,
    /// median / baseline median (for Higher) or baseline / median (for Lower):
    /// above 1.0 always means better than the baseline.
    pub ratio: Option<f64>,
    pub error: Option<String>,
}

/// Run a case `repeats` times, subjects alternating within each round.
pub fn run_case(mut case: Case<'_>, repeats: usize) -> Vec<Row> {
    let n = case.subjects.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    for round in 0..repeats {
        // Rotate the starting subject each round so none always runs first.
        for k in 0..n {
            let i = (round + k) % n;
            if errors[i].is_some() {
                continue;
            }
            match (case.subjects[i].run)() {
                Ok(v) => samples[i].push(v),
                Err(e) => {
                    eprintln!(
                        "bench: {} / {} / {}: {e}",
                        case.suite, case.name, case.subjects[i].name
                    );
                    errors[i] = Some(e);
                }
            }
        }
    }
    let summaries: Vec<Option<Summary>> = samples.iter().map(|s| Summary::of(s)).collect();
    let base = case
        .subjects
        .iter()
        .position(|s| s.name == case.baseline)
        .and_then(|i| summaries[i].as_ref().map(|s| s.median));
    case.subjects
        .iter()
        .zip(summaries)
        .zip(errors)
        .map(|((s, summary), error)| {
            let ratio = match (&summary, base) {
                (Some(m), Some(b)) if b > 0.0 && m.median > 0.0 => Some(match case.better {
                    Better::Higher => m.median / b,
                    Better::Lower => b / m.median,
                }),
                _ => None,
            };
            Row {
                suite: case.suite,
                case: case.name.clone(),
                subject: s.name.clone(),
                unit: case.unit,
                better: case.better,
                baseline: case.baseline.clone(),
                summary,
                ratio,
                error,
            }
        })
        .collect()
}

/// Render rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| suite | case | subject | median | unit | spread | ratio vs baseline |\n|---|---|---|---:|---|---:|---:|\n",
    );
    for r in rows {
        let (median, spread) = match &r.summary {
            Some(s) => (fmt_num(s.median), format!("{:.1}%", s.spread_pct)),
            None => ("—".into(), "—".into()),
        };
        let ratio = match (r.ratio, &r.error) {
            (_, Some(e)) => format!("failed: {}", e.replace('|', "/")),
            (Some(x), None) if r.subject == r.baseline => format!("{x:.2}× (baseline)"),
            (Some(x), None) => format!("{x:.2}× {}", r.baseline),
            (None, None) => "—".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.suite, r.case, r.subject, median, r.unit, spread, ratio
        ));
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_and_computes_ratios() {
        let order = std::cell::RefCell::new(Vec::new());
        let case = Case {
            suite: "t",
            name: "c".into(),
            unit: "ops/s",
            better: Better::Higher,
            baseline: "anchor".into(),
            subjects: vec![
                Subject {
                    name: "ours".into(),
                    run: Box::new(|| {
                        order.borrow_mut().push("ours");
                        Ok(200.0)
                    }),
                },
                Subject {
                    name: "anchor".into(),
                    run: Box::new(|| {
                        order.borrow_mut().push("anchor");
                        Ok(100.0)
                    }),
                },
            ],
        };
        let rows = run_case(case, 3);
        assert_eq!(
            *order.borrow(),
            ["ours", "anchor", "anchor", "ours", "ours", "anchor"]
        );
        assert_eq!(rows[0].ratio, Some(2.0));
        assert_eq!(rows[1].ratio, Some(1.0));
        let md = markdown(&rows);
        assert!(md.contains("2.00× anchor"));
    }

    #[test]
    fn failing_subject_is_reported_not_fatal() {
        let case = Case {
            suite: "t",
            name: "c".into(),
            unit: "s",
            better: Better::Lower,
            baseline: "a".into(),
            subjects: vec![
                Subject {
                    name: "a".into(),
                    run: Box::new(|| Ok(2.0)),
                },
                Subject {
                    name: "b".into(),
                    run: Box::new(|| Err("tool missing".into())),
                },
            ],
        };
        let rows = run_case(case, 2);
        assert!(rows[1].error.is_some());
        assert!(markdown(&rows).contains("failed: tool missing"));
    }
}
