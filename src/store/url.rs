//! Database URLs: the default, and a form safe to print.

/// The embedded default when neither `--database-url` nor `DATABASE_URL` is
/// given: a SQLite file in `./runs` (created on first use).
pub const DEFAULT_SQLITE_URL: &str = "sqlite://runs/chatforge.db?mode=rwc";

/// `DATABASE_URL` when set, else [`DEFAULT_SQLITE_URL`].
pub fn default_database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SQLITE_URL.to_string())
}

/// The same server URL pointing at database `db` (query kept): for scratch
/// databases made next to the configured one.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The URL with any password replaced by `***`, both in the user-info part
/// (`postgres://user:pw@host`) and in a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// The passwords in `url` (user-info and `password=`), raw and
/// percent-decoded.
fn passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some((_, pw)) = authority[..at].split_once(':')
        {
            out.push(pw.to_string());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for kv in query.split('&') {
            if let Some((k, v)) = kv.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                out.push(v.to_string());
            }
        }
    }
    let decoded: Vec<String> = out
        .iter()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    out.extend(decoded);
    out.retain(|p| !p.is_empty());
    out
}

/// `text` (say, a driver's error message) with every password from `url`
/// replaced by `***`.
pub(crate) fn scrub_secret(text: &str, url: &str) -> String {
    let mut out = text.to_string();
    for pw in passwords(url) {
        out = out.replace(&pw, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_with_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn test_redact_url() {
        assert_eq!(
            redact_url("postgres://bot:s3cr%40t@db.example:5432/logs"),
            "postgres://bot:***@db.example:5432/logs"
        );
        assert_eq!(
            redact_url("postgres://bot@h/db?sslmode=require&password=pw&x=1"),
            "postgres://bot@h/db?sslmode=require&password=***&x=1"
        );
        // An '@' in the password itself.
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url(DEFAULT_SQLITE_URL), DEFAULT_SQLITE_URL);
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn test_scrub_secret() {
        let url = "postgres://bot:s3cr%40t@h/db?password=other";
        let msg = "auth failed for s3cr@t / s3cr%40t / other";
        assert_eq!(scrub_secret(msg, url), "auth failed for *** / *** / ***");
        assert_eq!(scrub_secret("no secret", "sqlite://x.db"), "no secret");
    }
}
