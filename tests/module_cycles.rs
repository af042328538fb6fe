//! No import cycles among the top-level modules of `src/` (issue 21).
//!
//! The top-level modules are the `mod` lines of `src/lib.rs`. A module's code is `src/M.rs`
//! and everything under `src/M/`, less its tests: files named `tests.rs` or `*_tests.rs`,
//! and items marked `#[cfg(test)]` (a test module written inline, or declared with
//! `#[cfg(test)] mod name;` and kept in its own file). In what is left, with comments,
//! strings and character literals removed, every `crate::X` (also inside `use crate::{X, ..}`,
//! and `super::` paths that climb to the crate root) names module `X`, or, when `X` is a name
//! that `src/lib.rs` re-exports (`pub use M::{X, ..}`), the module `M` it comes from. The test
//! prints every edge with the files that make it, and fails naming each cycle it finds.
//!
//! Run it alone to read the graph: `cargo test --test module_cycles -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules declared in `lib.rs`, and root names re-exported from them.
fn read_lib(lib: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let code = strip_comments_and_literals(lib);
    let mut modules = Vec::new();
    for line in code.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(i) = words.iter().position(|w| *w == "mod") {
            let vis_ok = words[..i]
                .iter()
                .all(|w| w.starts_with("pub") || w.starts_with("#["));
            if vis_ok && line.trim_end().ends_with(';') {
                if let Some(name) = words.get(i + 1) {
                    modules.push(name.to_string());
                }
            }
        }
    }
    let mut reexports = BTreeMap::new();
    // `pub use M::{A, B as C, ...};` and `pub use M::A;` (one statement may span lines).
    for stmt in code.split(';') {
        let s = stmt.trim();
        let Some(rest) = s.strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim().trim_start_matches("crate::");
        let Some((first, tail)) = rest.split_once("::") else {
            continue;
        };
        if !modules.iter().any(|m| m == first) {
            continue;
        }
        let tail = tail.trim();
        let names: Vec<&str> = if let Some(group) = tail.strip_prefix('{') {
            group.trim_end_matches('}').split(',').collect()
        } else {
            vec![tail]
        };
        for n in names {
            // `path::Name as Alias` exports `Alias`; `path::Name` exports `Name`.
            let n = n.trim();
            let exported = match n.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => n.rsplit("::").next().unwrap_or(n).trim(),
            };
            if !exported.is_empty() {
                reexports.insert(exported.to_string(), first.to_string());
            }
        }
    }
    (modules, reexports)
}

/// Replaces comments, string literals and character literals by spaces (newlines kept, so
/// line numbers stay right).
fn strip_comments_and_literals(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() {
                let ch = b[i];
                if ch == '\\' {
                    blank(&mut out, ch);
                    if let Some(&e) = b.get(i + 1) {
                        blank(&mut out, e);
                    }
                    i += 2;
                    continue;
                }
                blank(&mut out, ch);
                i += 1;
                if ch == '"' {
                    break;
                }
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a) left as is.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                for &ch in &b[i..(j + 1).min(b.len())] {
                    blank(&mut out, ch);
                }
                i = j + 1;
            } else if b.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Blanks every item marked `#[cfg(test)]` (the attribute, then the item up to its `;` or
/// its balanced `{...}`), and returns the names of `#[cfg(test)] mod name;` declarations.
fn strip_cfg_test(code: &str) -> (String, Vec<String>) {
    let mut b: Vec<char> = code.chars().collect();
    let pat: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut declared = Vec::new();
    let mut i = 0;
    while i + pat.len() <= b.len() {
        if b[i..i + pat.len()] != pat[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + pat.len();
        let mut depth = 0usize;
        let mut end = b.len();
        while j < b.len() {
            match b[j] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item: String = b[start + pat.len()..end].iter().collect();
        let words: Vec<&str> = item
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(k) = words.iter().position(|w| *w == "mod") {
                if let Some(n) = words.get(k + 1) {
                    declared.push(n.to_string());
                }
            }
        }
        for ch in &mut b[start..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end;
    }
    (b.into_iter().collect(), declared)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at `at` (empty if none).
fn ident_at(b: &[char], at: usize) -> String {
    b[at.min(b.len())..]
        .iter()
        .take_while(|c| is_ident(**c))
        .collect()
}

fn skip_ws(b: &[char], mut at: usize) -> usize {
    while at < b.len() && b[at].is_whitespace() {
        at += 1;
    }
    at
}

/// The crate-root names a file refers to, with their line numbers: `crate::X`,
/// `crate::{X, Y::..}`, and `super::...::X` that climbs `depth` levels or more (a file at
/// `depth` levels below the root).
fn root_refs(code: &str, depth: usize) -> Vec<(String, usize)> {
    let b: Vec<char> = code.chars().collect();
    let line_of = |at: usize| b[..at].iter().filter(|c| **c == '\n').count() + 1;
    let mut refs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_ident(b[i]) || (i > 0 && is_ident(b[i - 1])) {
            i += 1;
            continue;
        }
        let word = ident_at(&b, i);
        let after = i + word.len();
        let preceded_by_path = i >= 2 && b[i - 1] == ':' && b[i - 2] == ':';
        let mut at = after;
        let at_root = if word == "crate" && !preceded_by_path {
            true
        } else if word == "super" && !preceded_by_path {
            // Count the `super::` chain.
            let mut n = 1;
            let mut k = after;
            while b.get(k) == Some(&':')
                && b.get(k + 1) == Some(&':')
                && ident_at(&b, k + 2) == "super"
            {
                n += 1;
                k += 2 + "super".len();
            }
            at = k;
            n >= depth
        } else {
            false
        };
        if at_root && b.get(at) == Some(&':') && b.get(at + 1) == Some(&':') {
            let k = skip_ws(&b, at + 2);
            if b.get(k) == Some(&'{') {
                // A group: the first identifier of every top-level entry.
                let mut d = 0;
                let mut expect = true;
                let mut m = k + 1;
                while m < b.len() {
                    match b[m] {
                        '{' => d += 1,
                        '}' if d == 0 => break,
                        '}' => d -= 1,
                        ',' if d == 0 => expect = true,
                        c if expect && is_ident(c) => {
                            let name = ident_at(&b, m);
                            refs.push((name.clone(), line_of(m)));
                            expect = false;
                            m += name.len();
                            continue;
                        }
                        _ => {}
                    }
                    m += 1;
                }
                i = m;
                continue;
            }
            let name = ident_at(&b, k);
            if !name.is_empty() {
                refs.push((name, line_of(k)));
            }
        }
        i = at.max(after);
    }
    refs
}

/// Every `.rs` file under `dir`, sorted.
fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Edges `from -> to` of the module graph, each with the places (`file:line`) that make it.
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn build_graph(src: &Path) -> (Vec<String>, Graph) {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let (modules, reexports) = read_lib(&lib);
    let mut graph: Graph = BTreeMap::new();
    for m in &modules {
        graph.entry(m.clone()).or_default();
        let mut files = Vec::new();
        let single = src.join(format!("{m}.rs"));
        if single.is_file() {
            files.push(single);
        }
        rs_files(&src.join(m), &mut files);
        // Files kept out: test files by name, and files of `#[cfg(test)] mod x;` lines.
        let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
        let mut parsed = Vec::new();
        for f in &files {
            let text = fs::read_to_string(f).expect("read source file");
            let (code, declared) = strip_cfg_test(&strip_comments_and_literals(&text));
            let dir = if f.file_name().is_some_and(|n| n == "mod.rs")
                || f == &src.join(format!("{m}.rs"))
            {
                // `src/m.rs` and `src/m/mod.rs` declare children in `src/m/`.
                src.join(m).join(
                    f.parent()
                        .and_then(|p| p.strip_prefix(src.join(m)).ok())
                        .unwrap_or(Path::new("")),
                )
            } else {
                f.with_extension("")
            };
            for d in declared {
                test_only.insert(dir.join(format!("{d}.rs")));
                test_only.insert(dir.join(&d).join("mod.rs"));
            }
            parsed.push((f.clone(), code));
        }
        for (f, code) in parsed {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "tests.rs" || name.ends_with("_tests.rs") || test_only.contains(&f) {
                continue;
            }
            let rel = f.strip_prefix(src).unwrap_or(&f);
            // Module depth below the crate root: src/m.rs and src/m/mod.rs are 1, src/m/a.rs
            // is 2, src/m/a/mod.rs is 2, src/m/a/b.rs is 3.
            let parts = rel.components().count();
            let depth = if name == "mod.rs" { parts - 1 } else { parts };
            for (target, line) in root_refs(&code, depth) {
                let to = if modules.contains(&target) {
                    target
                } else if let Some(owner) = reexports.get(&target) {
                    owner.clone()
                } else {
                    continue;
                };
                if to == *m {
                    continue;
                }
                graph
                    .entry(m.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .push(format!("src/{}:{line}", rel.display()));
            }
        }
    }
    (modules, graph)
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through `start` inside `comp` (breadth-first), as a list of modules
/// that begins and ends with `start`.
fn cycle_through(graph: &Graph, comp: &[String], start: &str) -> Vec<String> {
    let inside: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !inside.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    path.push(at.to_string());
                    at = prev[at];
                }
                path.push(start.to_string());
                path.reverse();
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start.to_string()]
}

fn report(graph: &Graph) -> String {
    let mut s = String::new();
    for (from, tos) in graph {
        for (to, places) in tos {
            let shown: Vec<&str> = places.iter().take(3).map(String::as_str).collect();
            let more = if places.len() > 3 {
                format!(" (+{} more)", places.len() - 3)
            } else {
                String::new()
            };
            s += &format!("{from} -> {to}: {}{more}\n", shown.join(", "));
        }
    }
    s
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, graph) = build_graph(&src);
    assert!(
        modules.len() > 3,
        "no modules read from src/lib.rs: {modules:?}"
    );
    println!(
        "module graph of src/ ({} modules):\n{}",
        modules.len(),
        report(&graph)
    );
    let comps = cycles(&graph);
    if comps.is_empty() {
        return;
    }
    let mut msg = format!(
        "{} import cycle(s) among the top-level modules of src/:\n",
        comps.len()
    );
    for comp in &comps {
        msg += &format!("\n- modules {{{}}} reach each other", comp.join(", "));
        // Every edge inside the component: breaking enough of them breaks the cycles.
        for from in comp {
            for (to, places) in &graph[from] {
                if comp.contains(to) {
                    msg += &format!("\n    edge {from} -> {to}: {}", places.join(", "));
                }
            }
        }
        // One concrete cycle per module of the component, deduplicated.
        let mut seen = BTreeSet::new();
        for m in comp {
            let c = cycle_through(&graph, comp, m);
            let mut key = c[..c.len() - 1].to_vec();
            if let Some(min) = key
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| n.as_str())
                .map(|(i, _)| i)
            {
                key.rotate_left(min);
            }
            if !seen.insert(key) {
                continue;
            }
            msg += &format!("\n    cycle: {}", c.join(" -> "));
            for w in c.windows(2) {
                let places = &graph[&w[0]][&w[1]];
                msg += &format!("\n      {} -> {}: {}", w[0], w[1], places[0]);
            }
        }
    }
    panic!("{msg}\n\nevery edge:\n{}", report(&graph));
}

#[test]
fn the_checker_reads_paths_groups_supers_and_skips_tests() {
    let code = strip_comments_and_literals(
        "use crate::a::X; // crate::b\nuse crate::{c::Y, d};\nlet s = \"crate::e\";\n\
         fn f<'a>() -> char { 'x' }\n/* crate::g */ super::super::h::Z;\n\
         #[cfg(test)]\nmod tests { use crate::i; }\n#[cfg(test)]\nmod more;\n",
    );
    let (code, declared) = strip_cfg_test(&code);
    let names: Vec<String> = root_refs(&code, 2).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "c", "d", "h"]);
    assert_eq!(declared, ["more"]);
    // One `super` from a file two levels down stays inside its module.
    assert!(root_refs("super::x::Y", 2).is_empty());
    let (mods, re) = read_lib(
        "pub mod a;\nmod b;\n#[cfg(test)]\nmod c;\npub use a::{X, y::Z as W};\npub use b::V;\n",
    );
    assert_eq!(mods, ["a", "b", "c"]);
    assert_eq!(re.get("X").map(String::as_str), Some("a"));
    assert_eq!(re.get("W").map(String::as_str), Some("a"));
    assert_eq!(re.get("V").map(String::as_str), Some("b"));
    let mut g: Graph = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), vec![format!("{a}.rs:1")]);
    }
    g.entry("d".into()).or_default();
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
    assert_eq!(cycle_through(&g, &cycles(&g)[0], "a"), ["a", "b", "c", "a"]);
}
