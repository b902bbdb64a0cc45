//! A cheap look at the text before the YAML parser sees it: the parser's scanner costs time
//! in the square of the flow nesting (`[[[[` or `{a: {a: `), and reads the whole file before its
//! own depth limit applies, so a file of brackets under the size limit could take minutes.

/// The deepest flow nesting let through: the parser's own limit, past which it refuses the
/// file anyway.
pub(super) const MAX_FLOW_DEPTH: usize = 128;

/// Where flow collections first nest deeper than [`MAX_FLOW_DEPTH`], as a problem naming the
/// line and column; brackets in quoted strings and comments do not count.
pub(super) fn check(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut in_comment = false;
    let mut previous = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            (line, column, in_comment) = (line + 1, 0, false);
        }
        match quote {
            _ if in_comment => {}
            Some('\'') if c == '\'' => {
                // `''` is a quote inside a single-quoted string.
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => match c {
                '#' if previous.is_whitespace() => in_comment = true,
                // A quote opens a string only where a scalar can start (not in `it's`).
                '\'' | '"' if previous.is_whitespace() || "[{,:-?".contains(previous) => {
                    quote = Some(c)
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "nested deeper than {MAX_FLOW_DEPTH} levels at line {line} column {column}"
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        previous = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        for text in [
            format!("a: '{deep}'"),
            format!("a: 'it''s {deep}'"),
            format!("a: \"\\\" {deep}\""),
            format!("a: 1 # {deep}"),
            format!("a: [{}]", "{}".repeat(1000)),
            format!("a: it's [x]\nb: '{deep}'"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn deep_flow_nesting_is_named_where_it_goes_too_deep() {
        let text = format!("rules:\n  a: {}", "[".repeat(MAX_FLOW_DEPTH + 1));
        assert_eq!(
            check(&text),
            Err("nested deeper than 128 levels at line 2 column 134".into())
        );
        assert_eq!(check(&"[".repeat(MAX_FLOW_DEPTH)), Ok(()));
    }
}
