//! `engines.node` of the app's egg against the Node.js that runs the master (the workers run the
//! same `node`): egg 4.1 needs Node >= 22.18 and, on an older one, fails deep in its own loading
//! (or, under a launcher that ignores `engines`, never says why). npm's range syntax, the part
//! `engines` use: comparators (`>=`, `>`, `<=`, `<`, `=`, bare), partial versions and `x`
//! wildcards, `^`, `~`, hyphen ranges, `||`. A range this cannot read is no requirement: the
//! check only ever refuses what is certain not to match.

/// A version as `[major, minor, patch]`; prerelease and build tags are not compared.
type Version = [u64; 3];

/// Whether Node `node` (`v22.18.0`, `22.18.0`) satisfies npm range `range`; `None` when either
/// cannot be read.
pub(crate) fn satisfies(range: &str, node: &str) -> Option<bool> {
    let version = parse_full(node)?;
    let mut any = false;
    for set in range.split("||") {
        any |= set_matches(set, version)?;
    }
    Some(any)
}

fn parse_full(v: &str) -> Option<Version> {
    let (parts, _) = parse_partial(v)?;
    Some(parts)
}

/// A comparator set (space-separated, all must hold); `None` when a part cannot be read.
fn set_matches(set: &str, v: Version) -> Option<bool> {
    let tokens = join_operators(set);
    // `A - B`: `>=A <=B`
    if let [low, "-", high] = tokens.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        return Some(comparator(&format!(">={low}"), v)? && comparator(&format!("<={high}"), v)?);
    }
    let mut all = true;
    for token in &tokens {
        all &= comparator(token, v)?;
    }
    Some(all)
}

/// Splits on whitespace, gluing an operator to the version after it (`>= 14.20.0`).
fn join_operators(set: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in set.split_whitespace() {
        match out.last_mut() {
            Some(prev) if matches!(prev.as_str(), ">=" | "<=" | ">" | "<" | "=" | "^" | "~") => {
                prev.push_str(word);
            }
            _ => out.push(word.to_owned()),
        }
    }
    out
}

fn comparator(token: &str, v: Version) -> Option<bool> {
    let (op, rest) = [">=", "<=", ">", "<", "=", "^", "~"]
        .into_iter()
        .find_map(|op| token.strip_prefix(op).map(|rest| (op, rest)))
        .unwrap_or(("", token));
    if matches!(rest, "" | "*" | "x" | "X") {
        // any version (`<*` matches none, which no `engines` says)
        return Some(!matches!(op, "<" | ">"));
    }
    let (low, given) = parse_partial(rest)?;
    // The first version past the partial one: `1.2` -> `1.3.0`, `1` -> `2.0.0`.
    let next = |parts: usize| -> Version {
        match parts {
            1 => [low[0] + 1, 0, 0],
            2 => [low[0], low[1] + 1, 0],
            _ => [low[0], low[1], low[2] + 1],
        }
    };
    Some(match op {
        ">=" => v >= low,
        ">" => v >= next(given),
        "<" => v < low,
        "<=" => v < next(given),
        "" | "=" => v >= low && v < next(given),
        "~" => v >= low && v < next(given.min(2)),
        // `^`: up to the next change of the first non-zero part given
        _ => {
            let bump = low
                .iter()
                .take(given)
                .position(|p| *p != 0)
                .map_or(given, |i| i + 1);
            v >= low && v < next(bump)
        }
    })
}

/// `v22.18.0-pre`, `22.18`, `22.x`: the numbers given (missing ones 0) and how many were given.
fn parse_partial(v: &str) -> Option<(Version, usize)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split(['-', '+']).next().unwrap_or(v);
    let mut out = [0; 3];
    let mut given = 0;
    for (i, part) in v.split('.').enumerate() {
        if i >= 3 {
            return None;
        }
        if matches!(part, "x" | "X" | "*") {
            break;
        }
        out[i] = part.parse().ok()?;
        given = i + 1;
    }
    (given > 0).then_some((out, given))
}

#[cfg(test)]
mod tests {
    use super::satisfies;

    #[test]
    fn the_ranges_eggs_declare() {
        // egg 3.34, egg 4.0, egg 4.1
        assert_eq!(satisfies(">= 14.20.0", "v20.20.2"), Some(true));
        assert_eq!(satisfies(">= 18.19.0", "v18.18.9"), Some(false));
        assert_eq!(satisfies(">=22.18.0", "v20.20.2"), Some(false));
        assert_eq!(satisfies(">=22.18.0", "v22.17.1"), Some(false));
        assert_eq!(satisfies(">=22.18.0", "v22.18.0"), Some(true));
        assert_eq!(satisfies(">=22.18.0", "v24.0.0"), Some(true));
        assert_eq!(satisfies(">=22.18.0", "v26.0.0-pre"), Some(true));
    }

    #[test]
    fn npm_range_syntax() {
        let yes = |r: &str, v: &str| assert_eq!(satisfies(r, v), Some(true), "{r} {v}");
        let no = |r: &str, v: &str| assert_eq!(satisfies(r, v), Some(false), "{r} {v}");
        yes("^20.19.0 || >=22.12.0", "22.12.0");
        yes("^20.19.0 || >=22.12.0", "20.20.0");
        no("^20.19.0 || >=22.12.0", "21.0.0");
        no("^20.19.0 || >=22.12.0", "22.11.0");
        yes(">=18 <23", "22.99.0");
        no(">=18 <23", "23.0.0");
        yes("20.x || 22.x", "22.3.4");
        no("20.x || 22.x", "24.0.0");
        yes("22", "22.1.0");
        no("22", "23.0.0");
        yes("~22.18", "22.18.5");
        no("~22.18", "22.19.0");
        no(">22", "22.9.9");
        yes(">22", "23.0.0");
        yes("<=22.18", "22.18.9");
        no("<=22.18", "22.19.0");
        yes("18 - 22", "22.5.0");
        no("18 - 22.4", "22.5.0");
        yes("^0.2.3", "0.2.9");
        no("^0.2.3", "0.3.0");
        yes("*", "20.0.0");
        yes("", "20.0.0");
    }

    #[test]
    fn what_cannot_be_read_is_no_requirement() {
        assert_eq!(satisfies(">=lts", "v22.0.0"), None);
        assert_eq!(satisfies(">=22.18.0", "nightly"), None);
        assert_eq!(satisfies("1.2.3.4", "v22.0.0"), None);
    }
}
