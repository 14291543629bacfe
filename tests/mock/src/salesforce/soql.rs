//! The SOQL subset the mock understands: `SELECT fields | COUNT() FROM obj
//! [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n]`,
//! conditions with AND/OR/NOT/parentheses, `= != <> < <= > >= IN NOT IN
//! LIKE`. Errors carry Salesforce's codes and its `^` pointer messages.

use std::cmp::Ordering;

use super::records::{parse_dt, Table};
use super::schema::{Field, Object};

/// A SOQL error: errorCode and message, as Salesforce sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct SoqlError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    /// A number, date or datetime as written.
    Lit(String),
    Sym(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
    DateTime(i64),
    Date(i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(String, Op, Lit),
    In(String, bool, Vec<Lit>),
    Like(String, String),
}

#[derive(Debug, Clone)]
pub struct OrderBy {
    pub field: String,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone)]
pub struct Query {
    /// Canonical field names; empty for COUNT().
    pub fields: Vec<String>,
    pub count: bool,
    pub object: String,
    pub filter: Option<Expr>,
    pub order: Vec<OrderBy>,
    pub limit: Option<usize>,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'\'' {
            let mut s = Vec::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err((start, "'".into())),
                    Some(b'\\') => {
                        let e = *b.get(i + 1).ok_or((start, "'".to_string()))?;
                        // \% and \_ stay escaped for LIKE.
                        if e == b'%' || e == b'_' {
                            s.push(b'\\');
                        }
                        s.push(match e {
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'r' => b'\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        s.push(*x);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(String::from_utf8_lossy(&s).into_owned()), start));
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b':' | b'-' | b'+'))
            {
                i += 1;
            }
            out.push((Tok::Lit(src[start..i].to_owned()), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((Tok::Word(src[start..i].to_owned()), start));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let sym = match two {
            "!=" => Some("!="),
            "<>" => Some("<>"),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((Tok::Sym(s), start));
            i += 2;
            continue;
        }
        let one = match c {
            b',' => ",",
            b'(' => "(",
            b')' => ")",
            b'=' => "=",
            b'<' => "<",
            b'>' => ">",
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err((start, ch.to_string()));
            }
        };
        out.push((Tok::Sym(one), start));
        i += 1;
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

/// Salesforce's error message form: the query line, a caret under the
/// offending column, then `ERROR at Row:r:Column:c` and the text.
pub fn pointer(src: &str, pos: usize, msg: &str) -> String {
    let before = &src[..pos.min(src.len())];
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    let line = src[line_start..].lines().next().unwrap_or("");
    format!(
        "\n{line}\n{}^\nERROR at Row:{row}:Column:{col}\n{msg}",
        " ".repeat(col - 1)
    )
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.i].0.clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn err_at(&self, pos: usize, code: &'static str, msg: &str) -> SoqlError {
        SoqlError {
            code,
            message: pointer(self.src, pos, msg),
        }
    }

    fn unexpected(&self) -> SoqlError {
        let what = match self.peek() {
            Tok::Word(w) | Tok::Lit(w) => w.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Sym(s) => s.to_string(),
            Tok::Eof => "<EOF>".into(),
        };
        self.err_at(
            self.pos(),
            "MALFORMED_QUERY",
            &format!("unexpected token: '{what}'"),
        )
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.is_kw(kw) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), SoqlError> {
        if self.peek()
            == &Tok::Sym(match s {
                "(" => "(",
                ")" => ")",
                _ => ",",
            })
        {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn word(&mut self) -> Result<(String, usize), SoqlError> {
        let pos = self.pos();
        match self.peek() {
            Tok::Word(w) if !is_reserved(w) => {
                let w = w.clone();
                self.next();
                Ok((w, pos))
            }
            _ => Err(self.unexpected()),
        }
    }
}

fn is_reserved(w: &str) -> bool {
    const R: &[&str] = &[
        "select", "from", "where", "and", "or", "not", "order", "by", "limit", "in", "like",
        "null", "true", "false", "asc", "desc", "nulls", "offset", "group",
    ];
    R.iter().any(|r| r.eq_ignore_ascii_case(w))
}

fn no_such_column(src: &str, pos: usize, field: &str, obj: &str) -> SoqlError {
    SoqlError {
        code: "INVALID_FIELD",
        message: pointer(
            src,
            pos,
            &format!("No such column '{field}' on entity '{obj}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."),
        ),
    }
}

/// Parse and check `src` against the org's objects.
pub fn parse<'o>(src: &str, objects: &'o [Object]) -> Result<(Query, &'o Object), SoqlError> {
    let toks = tokenize(src).map_err(|(pos, what)| SoqlError {
        code: "MALFORMED_QUERY",
        message: pointer(src, pos, &format!("unexpected token: '{what}'")),
    })?;
    let mut p = Parser { src, toks, i: 0 };
    p.expect_kw("SELECT")?;
    let mut raw_fields = Vec::new();
    let mut count = false;
    if p.is_kw("COUNT") && p.toks.get(p.i + 1).is_some_and(|t| t.0 == Tok::Sym("(")) {
        p.next();
        p.expect_sym("(")?;
        p.expect_sym(")")?;
        count = true;
    } else {
        loop {
            raw_fields.push(p.word()?);
            if p.peek() == &Tok::Sym(",") {
                p.next();
            } else {
                break;
            }
        }
    }
    p.expect_kw("FROM")?;
    let (obj_name, obj_pos) = p.word()?;
    let obj = objects
        .iter()
        .find(|o| o.name.eq_ignore_ascii_case(&obj_name))
        .ok_or_else(|| {
            p.err_at(
                obj_pos,
                "INVALID_TYPE",
                &format!("sObject type '{obj_name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."),
            )
        })?;
    let mut fields = Vec::new();
    for (f, pos) in &raw_fields {
        let def = obj
            .field(f)
            .ok_or_else(|| no_such_column(src, *pos, f, &obj.name))?;
        if fields.contains(&def.name) {
            return Err(p.err_at(
                *pos,
                "MALFORMED_QUERY",
                &format!("duplicate field selected: {}", def.name),
            ));
        }
        fields.push(def.name.clone());
    }
    let filter = if p.is_kw("WHERE") {
        p.next();
        Some(cond(&mut p, obj)?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.is_kw("ORDER") {
        p.next();
        p.expect_kw("BY")?;
        loop {
            let (f, pos) = p.word()?;
            let def = obj
                .field(&f)
                .ok_or_else(|| no_such_column(src, pos, &f, &obj.name))?;
            if !def.sortable() {
                return Err(p.err_at(
                    pos,
                    "INVALID_FIELD",
                    &format!("field '{}' can not be sorted in a query call", def.name),
                ));
            }
            let mut desc = false;
            if p.is_kw("ASC") {
                p.next();
            } else if p.is_kw("DESC") {
                p.next();
                desc = true;
            }
            let mut nulls_first = !desc;
            if p.is_kw("NULLS") {
                p.next();
                if p.is_kw("FIRST") {
                    nulls_first = true;
                } else if p.is_kw("LAST") {
                    nulls_first = false;
                } else {
                    return Err(p.unexpected());
                }
                p.next();
            }
            order.push(OrderBy {
                field: def.name.clone(),
                desc,
                nulls_first,
            });
            if p.peek() == &Tok::Sym(",") {
                p.next();
            } else {
                break;
            }
        }
    }
    let mut limit = None;
    if p.is_kw("LIMIT") {
        p.next();
        match p.next() {
            Tok::Lit(n) => {
                limit = Some(n.parse::<usize>().map_err(|_| {
                    p.err_at(
                        p.pos(),
                        "MALFORMED_QUERY",
                        &format!("unexpected token: '{n}'"),
                    )
                })?)
            }
            _ => {
                p.i -= 1;
                return Err(p.unexpected());
            }
        }
    }
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected());
    }
    Ok((
        Query {
            fields,
            count,
            object: obj.name.clone(),
            filter,
            order,
            limit,
        },
        obj,
    ))
}

/// `a AND b AND c` or `a OR b OR c`; mixing them without parentheses is a
/// syntax error in SOQL.
fn cond(p: &mut Parser, obj: &Object) -> Result<Expr, SoqlError> {
    let first = unary(p, obj)?;
    let mut items = vec![first];
    let mut kind: Option<bool> = None; // Some(true): AND
    loop {
        let and = if p.is_kw("AND") {
            true
        } else if p.is_kw("OR") {
            false
        } else {
            break;
        };
        if kind.is_some_and(|k| k != and) {
            return Err(p.unexpected());
        }
        kind = Some(and);
        p.next();
        items.push(unary(p, obj)?);
    }
    Ok(match kind {
        None => items.pop().expect("one item"),
        Some(true) => Expr::And(items),
        Some(false) => Expr::Or(items),
    })
}

fn unary(p: &mut Parser, obj: &Object) -> Result<Expr, SoqlError> {
    if p.is_kw("NOT") {
        p.next();
        return Ok(Expr::Not(Box::new(unary(p, obj)?)));
    }
    if p.peek() == &Tok::Sym("(") {
        p.next();
        let e = cond(p, obj)?;
        p.expect_sym(")")?;
        return Ok(e);
    }
    let (name, pos) = p.word()?;
    let def = obj
        .field(&name)
        .ok_or_else(|| no_such_column(p.src, pos, &name, &obj.name))?;
    if !def.filterable() || def.is_compound() {
        return Err(p.err_at(
            pos,
            "INVALID_FIELD",
            &format!("field '{}' can not be filtered in query call", def.name),
        ));
    }
    let field = def.name.clone();
    let negate_in = if p.is_kw("NOT") {
        p.next();
        if !p.is_kw("IN") {
            return Err(p.unexpected());
        }
        true
    } else {
        false
    };
    if p.is_kw("IN") {
        p.next();
        p.expect_sym("(")?;
        let mut lits = Vec::new();
        loop {
            lits.push(literal(p, def)?);
            if p.peek() == &Tok::Sym(",") {
                p.next();
            } else {
                break;
            }
        }
        p.expect_sym(")")?;
        return Ok(Expr::In(field, negate_in, lits));
    }
    if p.is_kw("LIKE") {
        p.next();
        return match p.next() {
            Tok::Str(s) => Ok(Expr::Like(field, s)),
            _ => {
                p.i -= 1;
                Err(p.unexpected())
            }
        };
    }
    let op = match p.peek() {
        Tok::Sym("=") => Op::Eq,
        Tok::Sym("!=") | Tok::Sym("<>") => Op::Ne,
        Tok::Sym("<") => Op::Lt,
        Tok::Sym("<=") => Op::Le,
        Tok::Sym(">") => Op::Gt,
        Tok::Sym(">=") => Op::Ge,
        _ => return Err(p.unexpected()),
    };
    p.next();
    let lit = literal(p, def)?;
    Ok(Expr::Cmp(field, op, lit))
}

/// A literal, checked against the field's type as Salesforce does.
fn literal(p: &mut Parser, f: &Field) -> Result<Lit, SoqlError> {
    let pos = p.pos();
    let tok = p.next();
    let lit = match &tok {
        Tok::Str(s) => Lit::Str(s.clone()),
        Tok::Word(w) if w.eq_ignore_ascii_case("null") => Lit::Null,
        Tok::Word(w) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
        Tok::Word(w) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
        Tok::Lit(s) if s.len() >= 10 && s.as_bytes()[4] == b'-' => {
            let ms = parse_dt(s).ok_or_else(|| {
                p.err_at(
                    pos,
                    "MALFORMED_QUERY",
                    &format!("line 1:{pos} no viable alternative at character ' '"),
                )
            })?;
            if s.len() == 10 {
                Lit::Date(ms)
            } else {
                Lit::DateTime(ms)
            }
        }
        Tok::Lit(s) => match s.parse::<f64>() {
            Ok(v) => Lit::Num(v),
            Err(_) => {
                p.i -= 1;
                return Err(p.unexpected());
            }
        },
        _ => {
            p.i -= 1;
            return Err(p.unexpected());
        }
    };
    let want = match f.ftype.as_str() {
        "datetime" => "dateTime",
        "date" => "date",
        "int" => "integer",
        "double" | "currency" | "percent" => "double",
        "boolean" => "boolean",
        "time" => "time",
        _ => "string",
    };
    let ok = matches!(
        (&lit, want),
        (Lit::Null, _)
            | (Lit::DateTime(_), "dateTime")
            | (Lit::Date(_), "date")
            | (Lit::Num(_), "double" | "integer")
            | (Lit::Bool(_), "boolean")
            | (Lit::Str(_), "string" | "time")
    );
    if !ok {
        let quoted = if want == "string" {
            "should be enclosed in quotes"
        } else {
            "should not be enclosed in quotes"
        };
        return Err(p.err_at(
            pos,
            "INVALID_FIELD",
            &format!(
                "value of filter criterion for field '{}' must be of type {want} and {quoted}",
                f.name
            ),
        ));
    }
    Ok(lit)
}

/// A value as its field's type compares.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Key {
    Num(f64),
    Str(String),
}

pub fn key(f: &Field, v: &str) -> Option<Key> {
    match f.ftype.as_str() {
        "int" | "double" | "currency" | "percent" => v.parse().ok().map(Key::Num),
        "datetime" | "date" => parse_dt(v).map(|ms| Key::Num(ms as f64)),
        "boolean" => Some(Key::Num(if v == "true" { 1.0 } else { 0.0 })),
        // Ids compare on their case-sensitive 15-character form.
        "id" | "reference" => Some(Key::Str(v.chars().take(15).collect())),
        _ => Some(Key::Str(v.to_lowercase())),
    }
}

/// A record's key for `f`, without formatting and re-parsing the audit
/// times.
fn field_key(t: &Table, f: &Field, n: u64, seq: u64) -> Option<Key> {
    match f.name.as_str() {
        "CreatedDate" | "LastModifiedDate" | "SystemModstamp" if t.exists(n, seq) => {
            let (c, m, s) = t.times(n, seq);
            let ms = match f.name.as_str() {
                "CreatedDate" => c,
                "LastModifiedDate" => m,
                _ => s,
            };
            Some(Key::Num(ms as f64))
        }
        _ => t.value(n, &f.name, seq).and_then(|v| key(f, &v)),
    }
}

fn lit_key(f: &Field, l: &Lit) -> Option<Key> {
    match l {
        Lit::Null => None,
        Lit::Num(x) => Some(Key::Num(*x)),
        Lit::Bool(b) => Some(Key::Num(if *b { 1.0 } else { 0.0 })),
        Lit::DateTime(ms) | Lit::Date(ms) => Some(Key::Num(*ms as f64)),
        Lit::Str(s) => key(f, s),
    }
}

fn like(pattern: &str, v: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = v.to_lowercase().chars().collect();
    fn go(p: &[char], v: &[char]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some('%') => (0..=v.len()).any(|i| go(&p[1..], &v[i..])),
            Some('_') => !v.is_empty() && go(&p[1..], &v[1..]),
            Some('\\') if p.len() > 1 => v.first() == Some(&p[1]) && go(&p[2..], &v[1..]),
            Some(c) => v.first() == Some(c) && go(&p[1..], &v[1..]),
        }
    }
    go(&p, &v)
}

impl Expr {
    /// Whether the filter tests `field` anywhere.
    pub fn mentions(&self, field: &str) -> bool {
        match self {
            Expr::And(v) | Expr::Or(v) => v.iter().any(|e| e.mentions(field)),
            Expr::Not(e) => e.mentions(field),
            Expr::Cmp(f, ..) | Expr::In(f, ..) | Expr::Like(f, _) => f.eq_ignore_ascii_case(field),
        }
    }

    pub fn matches(&self, t: &Table, n: u64, seq: u64) -> bool {
        let field = |name: &str| t.obj.field(name).cloned();
        match self {
            Expr::And(xs) => xs.iter().all(|x| x.matches(t, n, seq)),
            Expr::Or(xs) => xs.iter().any(|x| x.matches(t, n, seq)),
            Expr::Not(x) => !x.matches(t, n, seq),
            Expr::Cmp(name, op, lit) => {
                let Some(f) = field(name) else { return false };
                let k = field_key(t, &f, n, seq);
                let l = lit_key(&f, lit);
                match (k, l) {
                    (None, None) => *op == Op::Eq,
                    // SOQL's != matches nulls, unlike SQL's.
                    (None, Some(_)) | (Some(_), None) => *op == Op::Ne,
                    (Some(a), Some(b)) => {
                        let o = a.partial_cmp(&b);
                        match op {
                            Op::Eq => o == Some(Ordering::Equal),
                            Op::Ne => o != Some(Ordering::Equal),
                            Op::Lt => o == Some(Ordering::Less),
                            Op::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
                            Op::Gt => o == Some(Ordering::Greater),
                            Op::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
                        }
                    }
                }
            }
            Expr::In(name, negate, lits) => {
                let Some(f) = field(name) else { return false };
                let k = t.value(n, name, seq).and_then(|v| key(&f, &v));
                let found = lits.iter().any(|l| lit_key(&f, l) == k);
                found != *negate
            }
            Expr::Like(name, pat) => t.value(n, name, seq).is_some_and(|v| like(pat, &v)),
        }
    }

    /// Bounds on the time field implied by top-level AND conditions.
    pub fn time_bounds(&self, time_field: &str) -> (i64, i64) {
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        let items: Vec<&Expr> = match self {
            Expr::And(xs) => xs.iter().collect(),
            other => vec![other],
        };
        for e in items {
            if let Expr::Cmp(f, op, Lit::DateTime(ms) | Lit::Date(ms)) = e {
                if f != time_field {
                    continue;
                }
                match op {
                    Op::Gt => lo = lo.max(ms.saturating_add(1)),
                    Op::Ge => lo = lo.max(*ms),
                    Op::Lt => hi = hi.min(ms.saturating_sub(1)),
                    Op::Le => hi = hi.min(*ms),
                    Op::Eq => {
                        lo = lo.max(*ms);
                        hi = hi.min(*ms);
                    }
                    Op::Ne => {}
                }
            }
        }
        (lo, hi)
    }
}

/// Ids of the records a query returns now, in result order.
pub fn run(q: &Query, t: &Table, all: bool, seq: u64) -> Vec<u64> {
    let tf = t.obj.time_field();
    let (lo, hi) = q
        .filter
        .as_ref()
        .map(|f| f.time_bounds(tf))
        .unwrap_or((i64::MIN, i64::MAX));
    let by_time = q.order.first().is_some_and(|o| o.field == tf);
    let mut candidates = if lo > i64::MIN || hi < i64::MAX || by_time {
        t.by_time(lo, hi, all)
    } else {
        t.all_ids(all)
    };
    // `query` hides archived activities; `queryAll` returns them.
    if !all && t.obj.has("IsArchived") {
        candidates.retain(|n| !t.archived(*n));
    }
    let mut ids: Vec<u64> = match &q.filter {
        Some(f) => candidates
            .into_iter()
            .filter(|n| f.matches(t, *n, seq))
            .collect(),
        None => candidates,
    };
    // The time scan already yields ascending time order.
    let presorted = q.order.len() == 1 && by_time && !q.order[0].desc;
    if !q.order.is_empty() && !presorted {
        let defs: Vec<Field> = q
            .order
            .iter()
            .filter_map(|o| t.obj.field(&o.field).cloned())
            .collect();
        let mut keyed: Vec<(Vec<Option<Key>>, u64)> = ids
            .iter()
            .map(|n| {
                let ks = defs
                    .iter()
                    .map(|f| match f.name.as_str() {
                        // Record numbers sort as the ids do.
                        "Id" => Some(Key::Num(*n as f64)),
                        _ => field_key(t, f, *n, seq),
                    })
                    .collect();
                (ks, *n)
            })
            .collect();
        keyed.sort_by(|a, b| {
            for (i, o) in q.order.iter().enumerate() {
                let ord = match (&a.0[i], &b.0[i]) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => {
                        if o.nulls_first {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        }
                    }
                    (Some(_), None) => {
                        if o.nulls_first {
                            Ordering::Greater
                        } else {
                            Ordering::Less
                        }
                    }
                    (Some(x), Some(y)) => {
                        let c = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                        if o.desc {
                            c.reverse()
                        } else {
                            c
                        }
                    }
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        ids = keyed.into_iter().map(|k| k.1).collect();
    }
    if let Some(l) = q.limit {
        ids.truncate(l);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::super::schema::objects;
    use super::*;

    fn p(q: &str) -> Result<Query, SoqlError> {
        let objs = objects();
        parse(q, &objs).map(|(q, _)| q)
    }

    #[test]
    fn parses_the_subset() {
        let q = p("select id, NAME, SystemModstamp from account where (SystemModstamp > 2024-03-01T12:00:00Z and Name != null) or Id in ('001', '002') order by SystemModstamp asc, Id desc nulls last limit 10").unwrap();
        assert_eq!(q.fields, ["Id", "Name", "SystemModstamp"]);
        assert_eq!(q.object, "Account");
        assert_eq!(q.order.len(), 2);
        assert!(!q.order[1].nulls_first);
        assert_eq!(q.limit, Some(10));
        assert!(
            p("SELECT COUNT() FROM Contact WHERE Email LIKE '%@x.com' AND NOT Name = 'a\\'b'")
                .unwrap()
                .count
        );
        for dt in [
            "2024-03-01T12:00:00.000Z",
            "2024-03-01T12:00:00+00:00",
            "2024-03-01T12:00:00.000+0000",
        ] {
            let q = p(&format!(
                "SELECT Id FROM Account WHERE SystemModstamp >= {dt}"
            ))
            .unwrap();
            assert_eq!(
                q.filter.unwrap().time_bounds("SystemModstamp").0,
                1_709_294_400_000
            );
        }
        assert!(p("SELECT Id FROM Account WHERE Signup_Date__c = 2024-03-01 AND Loyalty_Score__c > 1.5 AND Is_VIP__c = true").is_ok());
    }

    #[test]
    fn errors_read_like_salesforce() {
        let e = p("SELECT Id, Foo FROM Account").unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD");
        assert!(e.message.starts_with("\nSELECT Id, Foo FROM Account\n           ^\nERROR at Row:1:Column:12\nNo such column 'Foo' on entity 'Account'."), "{}", e.message);
        let e = p("SELECT Id FROM Nope").unwrap_err();
        assert_eq!(e.code, "INVALID_TYPE");
        assert!(e.message.contains("sObject type 'Nope' is not supported."));
        assert_eq!(p("SELECT Id FROM").unwrap_err().code, "MALFORMED_QUERY");
        assert_eq!(
            p("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'")
                .unwrap_err()
                .code,
            "MALFORMED_QUERY"
        );
        let e =
            p("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'").unwrap_err();
        assert!(
            e.message
                .contains("must be of type dateTime and should not be enclosed in quotes"),
            "{}",
            e.message
        );
        let e = p("SELECT Id FROM Account WHERE BillingAddress != null").unwrap_err();
        assert!(e.message.contains("can not be filtered"));
        let e = p("SELECT Id FROM Account ORDER BY Description").unwrap_err();
        assert!(e.message.contains("can not be sorted"));
        assert_eq!(
            p("SELECT IsDeleted FROM User").unwrap_err().code,
            "INVALID_FIELD"
        );
    }

    #[test]
    fn like_patterns() {
        assert!(like("%@x.com", "A@X.COM"));
        assert!(like("a_c", "abc"));
        assert!(!like("a\\_c", "abc"));
        assert!(like("a\\_c", "a_c"));
    }
}
