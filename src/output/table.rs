//! Text tables whose header lines up with its rows, whatever the cells'
//! lengths: widths come from the widest cell of each column (in characters),
//! and colour is applied after padding, so escapes never shift a column.

use anstyle::Style;

/// How a column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

pub(crate) struct Table {
    indent: String,
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<(String, Option<Style>)>>,
}

impl Table {
    /// A table with these column headers, each line starting with `indent`.
    pub(crate) fn new(indent: &str, columns: &[(&str, Align)]) -> Table {
        Table {
            indent: indent.to_string(),
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// A row of plain cells.
    #[cfg(test)]
    pub(crate) fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| (c.into(), None)).collect());
    }

    /// A row whose cells may carry a style.
    pub(crate) fn styled_row(&mut self, cells: Vec<(String, Option<Style>)>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let n = self.columns.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|(c, _)| c.chars().count())
                .chain(std::iter::once(self.columns[i].0.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        // Written straight into one string (a row is not built apart, nor a
        // cell copied): `tasks` at 10,000 tasks is 10,000 rows.
        let line_len = self.indent.len() + widths.iter().map(|w| w + 2).sum::<usize>() + 1;
        let mut out = String::with_capacity(line_len * (self.rows.len() + 1));
        self.line(
            &mut out,
            &widths,
            self.columns.iter().map(|(h, _)| (h.as_str(), None)),
        );
        for row in &self.rows {
            self.line(&mut out, &widths, row.iter().map(|(t, s)| (t.as_str(), *s)));
        }
        out
    }

    /// One line of cells, padded to `widths`, its trailing blanks cut.
    fn line<'a>(
        &self,
        out: &mut String,
        widths: &[usize],
        cells: impl Iterator<Item = (&'a str, Option<Style>)>,
    ) {
        let n = self.columns.len();
        let start = out.len();
        out.push_str(&self.indent);
        for (i, (text, style)) in cells.enumerate().take(n) {
            let pad = widths[i].saturating_sub(text.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            let right = self.columns[i].1 == Align::Right;
            if right {
                out.extend(std::iter::repeat_n(' ', pad));
            }
            match style {
                Some(s) => out.push_str(&super::paint(s, text)),
                None => out.push_str(text),
            }
            if !right && i + 1 < n {
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_up_with_long_cells() {
        let mut t = Table::new(
            "  ",
            &[
                ("#", Align::Right),
                ("task", Align::Left),
                ("pool", Align::Left),
            ],
        );
        t.row(["1", "a-very-long-task-identifier-that-is-long", "local"]);
        t.row(["10", "b", "remote"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(col(lines[0], "pool"), col(lines[1], "local"), "{text}");
        assert_eq!(col(lines[0], "pool"), col(lines[2], "remote"), "{text}");
        assert_eq!(col(lines[0], "task"), col(lines[2], "b"), "{text}");
        assert!(lines[1].starts_with("   1  "), "{text}");
    }
}
