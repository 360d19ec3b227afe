//! The report as one self-contained HTML page: the main table, the failed runs, the
//! figures as inline SVG. No script, no external stylesheet, no network.

use super::figures::Figure;
use super::table::{errors_table, main_table};
use super::Report;

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for h in header {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{}</td>", escape(c)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// Strips the XML declaration plotters may put before `<svg`, for inlining.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;font-size:12px;margin-bottom:24px}\
th,td{border:1px solid #bbb;padding:3px 6px;text-align:right;white-space:nowrap}\
th{background:#eee;position:sticky;top:0}td:first-child,td:nth-child(2){text-align:left}\
.scroll{overflow-x:auto}figure{margin:0 0 32px 0}figcaption{font-weight:bold;margin-bottom:6px}\
.sim{color:#b00;font-weight:bold}";

/// The page.
pub fn to_html(report: &Report, figures: &[Figure]) -> String {
    let s = &report.study;
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!("<title>Study {}</title>\n", escape(&s.name)));
    out.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    out.push_str(&format!("<h1>Study {}</h1>\n", escape(&s.name)));
    if s.simulated {
        out.push_str(
            "<p class=\"sim\">SIMULATED: some power readings came from a simulated sensor.</p>\n",
        );
    }
    out.push_str(&format!(
        "<p>plan sha256 <code>{}</code> · {} runs · {} configurations · boards: {}</p>\n",
        escape(&s.plan_sha256),
        report.runs,
        report.configurations.len(),
        escape(&s.boards.join(", "))
    ));
    out.push_str("<p>Means ± 95 % CI half-width (Student t); J/token net = idle subtracted.</p>\n");
    let (h, rows) = main_table(report);
    out.push_str("<div class=\"scroll\">\n");
    out.push_str(&table(&h, &rows));
    out.push_str("</div>\n");
    let (h, rows) = errors_table(report);
    if !rows.is_empty() {
        out.push_str("<h2>Failed runs</h2>\n");
        out.push_str(&table(&h, &rows));
    }
    if !figures.is_empty() {
        out.push_str("<h2>Figures</h2>\n");
    }
    for f in figures {
        out.push_str(&format!(
            "<figure id=\"fig-{}\">\n<figcaption>{}</figcaption>\n{}\n</figure>\n",
            f.name,
            escape(&f.title),
            inline_svg(&f.svg)
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// A page with one figure alone (for looking at, or checking, one figure).
pub fn figure_page(f: &Figure) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<figure id=\"fig-{}\">\n{}\n</figure>\n</body>\n</html>\n",
        escape(&f.title),
        f.name,
        inline_svg(&f.svg)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(inline_svg("<?xml version=\"1.0\"?>\n<svg/>"), "<svg/>");
    }
}
