//! `.env` files read as OpenRag's own tooling reads them (python-dotenv and Docker Compose's
//! `env_file`), so an OpenRag `.env` works unchanged:
//! - `KEY=value`, optionally after `export `; blank lines and `#` lines are skipped;
//! - an unquoted value is taken to the end of the line, spaces included
//!   (`OIDC_SCOPES=openid email profile`), and ends before a `#` that follows whitespace (an
//!   inline comment); surrounding whitespace is trimmed;
//! - `'single quotes'` keep their content literally (`\'` and `\\` excepted);
//! - `"double quotes"` understand `\n`, `\t`, `\r`, `\"`, `\\` and `\'`;
//! - quoted values (either quote) may span lines;
//! - after a closing quote only whitespace and a comment may follow;
//! - a UTF-8 byte-order mark at the start (Windows editors write one) is skipped.
//!
//! `${VAR}` is not expanded (a secret with a `$` stays as written). Pure: text in, pairs out.

/// Parses `.env` text into pairs, in file order. An error names the line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            // python-dotenv reads a bare `KEY` as "declared, no value": nothing to set.
            continue;
        };
        let key = key.trim();
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
        if !valid {
            // Not quoted back: what stands before `=` may be a piece of a value (a secret
            // that spilled over a line), and problems reach stderr and the log.
            return Err(format!(
                "line {}: what stands before '=' is not a variable name (letters, digits, '_')",
                n + 1
            ));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let mut body = rest[1..].to_owned();
                let mut first = n;
                loop {
                    if let Some((value, after)) = closing(&body, q) {
                        let after = after.trim_start();
                        if !(after.is_empty() || after.starts_with('#')) {
                            return Err(format!(
                                "line {}: unexpected text after the closing quote of {key}",
                                first + 1
                            ));
                        }
                        break value;
                    }
                    // Either quote spans lines, as python-dotenv reads them.
                    match lines.next() {
                        Some((m, next)) => {
                            body.push('\n');
                            body.push_str(next);
                            first = first.min(m);
                        }
                        None => {
                            return Err(format!("line {}: {key}: the quote is never closed", n + 1))
                        }
                    }
                }
            }
            _ => unquoted(rest),
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// An unquoted value: up to an inline comment (`#` after whitespace), trimmed.
fn unquoted(rest: &str) -> String {
    let mut end = rest.len();
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            end = i;
            break;
        }
    }
    rest[..end].trim().to_owned()
}

/// The decoded content up to the closing `quote` in `body`, and what follows it.
fn closing(body: &str, quote: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    out.push('\\');
                    break;
                };
                match (quote, e) {
                    (_, '\\') => out.push('\\'),
                    (_, '\'') => out.push('\''),
                    ('"', '"') => out.push('"'),
                    ('"', 'n') => out.push('\n'),
                    ('"', 't') => out.push('\t'),
                    ('"', 'r') => out.push('\r'),
                    (_, other) => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            c if c == quote => return Some((out, &body[i + c.len_utf8()..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn value(text: &str, key: &str) -> Option<String> {
        parse(text)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Lines of OpenRag's own `.env.example`, as its tooling reads them.
    #[test]
    fn openrags_example_env_reads_as_openrag_reads_it() {
        let text = "# LLM\nBASE_URL=\nAPI_KEY=\n\n\
            EMBEDDER_MODEL_NAME=jinaai/jina-embeddings-v3 # or other embedder from huggingface compatible with vllm \n\
            RERANKER_ENABLED=true # deactivate the reranker if your CPU is not powerful enough\n\
            RAY_ENABLE_RECORD_ACTOR_TASK_LOGGING=1 # # to enable logs at task level in ray dashboard\n\
            RAY_task_retry_delay_ms=3000\n\
            INCLUDE_CREDENTIALS=false                       # set true if fastapi authentification is enabled\n\
            INDEXERUI_URL='http://X.X.X.X:INDEXERUI_PORT'                 \n\
            API_BASE_URL='http://X.X.X.X:APP_PORT'          # Base URL of your FastAPI backend. \n\
            # OIDC_SCOPES=openid email profile offline_access  # include offline_access\n\
            OIDC_SCOPES=openid email profile offline_access  # include offline_access for refresh tokens\n";
        assert_eq!(value(text, "BASE_URL").as_deref(), Some(""));
        assert_eq!(
            value(text, "EMBEDDER_MODEL_NAME").as_deref(),
            Some("jinaai/jina-embeddings-v3")
        );
        assert_eq!(value(text, "RERANKER_ENABLED").as_deref(), Some("true"));
        assert_eq!(
            value(text, "RAY_ENABLE_RECORD_ACTOR_TASK_LOGGING").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(text, "RAY_task_retry_delay_ms").as_deref(),
            Some("3000")
        );
        assert_eq!(value(text, "INCLUDE_CREDENTIALS").as_deref(), Some("false"));
        assert_eq!(
            value(text, "INDEXERUI_URL").as_deref(),
            Some("http://X.X.X.X:INDEXERUI_PORT")
        );
        assert_eq!(
            value(text, "API_BASE_URL").as_deref(),
            Some("http://X.X.X.X:APP_PORT")
        );
        assert_eq!(
            value(text, "OIDC_SCOPES").as_deref(),
            Some("openid email profile offline_access"),
            "unquoted values keep their spaces"
        );
        assert_eq!(
            parse(text).unwrap().len(),
            10,
            "the commented-out line is not read"
        );
    }

    #[test]
    fn quotes_export_and_comments() {
        let text = "export AUTH_MODE=oidc\n\
            OIDC_CLIENT_SECRET=\"s3cr#t with \\\"quotes\\\"\" # comment\n\
            OIDC_ENDPOINT='https://sso.example.com/' \n\
            HASH=abc#def\n\
            SPACED  =  padded value  \n\
            MULTI=\"line one\nline two\"\n\
            SINGLE='a \\'quoted\\' \\n stays'\n\
            DOLLAR=${NOT_EXPANDED}\n\
            BARE\n";
        assert_eq!(value(text, "AUTH_MODE").as_deref(), Some("oidc"));
        assert_eq!(
            value(text, "OIDC_CLIENT_SECRET").as_deref(),
            Some("s3cr#t with \"quotes\"")
        );
        assert_eq!(
            value(text, "OIDC_ENDPOINT").as_deref(),
            Some("https://sso.example.com/")
        );
        assert_eq!(
            value(text, "HASH").as_deref(),
            Some("abc#def"),
            "# needs a space before it"
        );
        assert_eq!(value(text, "SPACED").as_deref(), Some("padded value"));
        assert_eq!(value(text, "MULTI").as_deref(), Some("line one\nline two"));
        assert_eq!(
            value(text, "SINGLE").as_deref(),
            Some("a 'quoted' \\n stays")
        );
        assert_eq!(value(text, "DOLLAR").as_deref(), Some("${NOT_EXPANDED}"));
        assert_eq!(value(text, "BARE"), None);
        // As python-dotenv: single quotes span lines too, and a byte-order mark is skipped.
        let text = "\u{feff}FIRST=1\nKEY='-----BEGIN KEY-----\nabc\n-----END KEY-----'\nNEXT=2\n";
        assert_eq!(value(text, "FIRST").as_deref(), Some("1"));
        assert_eq!(
            value(text, "KEY").as_deref(),
            Some("-----BEGIN KEY-----\nabc\n-----END KEY-----")
        );
        assert_eq!(value(text, "NEXT").as_deref(), Some("2"));
    }

    #[test]
    fn broken_lines_name_their_line() {
        for (text, line) in [
            ("A=1\nB='open\n", "line 2"),
            ("A=\"x\" trailing\n", "line 1"),
            ("1BAD=x\n", "line 1"),
            ("A=1\n\nB=\"never\nclosed\n", "line 3"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(line), "{text:?}: {e}");
        }
        // A value that spilled over a line is not quoted back in the problem.
        let e = parse(
            "OIDC_CLIENT_SECRET=abc
d3f-s3cr3t part=2
",
        )
        .unwrap_err();
        assert!(e.starts_with("line 2") && !e.contains("s3cr3t"), "{e}");
    }
}
