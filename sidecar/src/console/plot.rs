//! Plots as SVG drawn on the server: no script, nothing fetched, readable without colour (each
//! bar carries its number).

use maud::{html, Markup};

/// Horizontal bars, one per `(label, count)`, largest first.
pub fn bars(title: &str, mut data: Vec<(String, u64)>) -> Markup {
    data.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // Every action there is (about sixty at most), so none hides behind a cut.
    data.truncate(80);
    let max = data.iter().map(|d| d.1).max().unwrap_or(1).max(1);
    let (row, label_w, bar_w) = (22u64, 230u64, 360u64);
    let height = row * data.len() as u64 + 10;
    html! {
        figure.plot {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" width=(label_w + bar_w + 60) height=(height) role="img" aria-label=(title) {
                @for (i, (label, n)) in data.iter().enumerate() {
                    @let y = i as u64 * row + 4;
                    text x=(label_w - 6) y=(y + 15) text-anchor="end" font-size="13" { (label) }
                    rect x=(label_w) y=(y) width=((n * bar_w / max).max(1)) height=(row - 6) fill="#3b6fb6" {}
                    text x=(label_w + (n * bar_w / max).max(1) + 4) y=(y + 15) font-size="13" { (n) }
                }
            }
        }
    }
}

/// Columns over time: `buckets` are (start label, ok count, error count), oldest first; errors
/// are drawn on top of the successes.
pub fn timeline(title: &str, buckets: &[(String, u64, u64)]) -> Markup {
    let max = buckets.iter().map(|b| b.1 + b.2).max().unwrap_or(1).max(1);
    let (w, h, left, bottom) = (600u64, 160u64, 40u64, 36u64);
    let col = (w / buckets.len().max(1) as u64).max(2);
    html! {
        figure.plot {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" width=(left + w + 10) height=(h + bottom) role="img" aria-label=(title) {
                text x="0" y="12" font-size="11" { (max) }
                line x1=(left) y1=(h) x2=(left + w) y2=(h) stroke="#888" {}
                @for (i, (label, ok, err)) in buckets.iter().enumerate() {
                    @let x = left + i as u64 * col;
                    @let ok_h = ok * (h - 10) / max;
                    @let err_h = err * (h - 10) / max;
                    rect x=(x) y=(h - ok_h - err_h) width=(col.saturating_sub(1).max(1)) height=(ok_h) fill="#9bb8df" {}
                    rect.errors x=(x) y=(h - err_h) width=(col.saturating_sub(1).max(1)) height=(err_h) fill="#c0392b" data-errors=(err) {}
                    @if i == 0 || i + 1 == buckets.len() {
                        text x=(x) y=(h + 14) font-size="11" { (label) }
                    }
                }
                text x=(left) y=(h + 30) font-size="11" fill="#c0392b" { "■ errors" }
                text x=(left + 70) y=(h + 30) font-size="11" fill="#3b6fb6" { "■ OK" }
            }
        }
    }
}
