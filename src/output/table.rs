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
        let mut out = String::new();
        let header: Vec<(String, Option<Style>)> = self
            .columns
            .iter()
            .map(|(h, _)| (h.clone(), None))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = self.indent.clone();
            for (i, (text, style)) in row.iter().enumerate().take(n) {
                let last = i + 1 == n;
                let pad = widths[i].saturating_sub(text.chars().count());
                let shown = match style {
                    Some(s) => super::paint(*s, text),
                    None => text.clone(),
                };
                if i > 0 {
                    line.push_str("  ");
                }
                match self.columns[i].1 {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(&shown);
                    }
                    Align::Left => {
                        line.push_str(&shown);
                        if !last {
                            line.push_str(&" ".repeat(pad));
                        }
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
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
