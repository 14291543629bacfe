use super::*;

fn ok(r: Cleaned) -> String {
    r.unwrap_or_else(|e| panic!("rejected: {e}"))
        .expect("empty")
}

fn reason(r: Cleaned) -> String {
    match r {
        Err(e) => e.reason().to_owned(),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

// --- text

#[test]
fn clean_text_collapses_every_kind_of_space() {
    assert_eq!(text("  Ada   Lovelace "), Some("Ada Lovelace".into()));
    assert_eq!(
        text("Ada\u{a0}Lovelace\t\r\n  Analyst"),
        Some("Ada Lovelace Analyst".into())
    );
    assert_eq!(text("\u{feff}Acme\u{200b}Corp"), Some("Acme Corp".into()));
    assert_eq!(text("Ünïcode  kept"), Some("Ünïcode kept".into()));
    assert_eq!(text(""), None);
    assert_eq!(text(" \u{a0}\t\n "), None);
}

// --- email

#[test]
fn clean_email_accepts_messy_forms() {
    let cases = [
        (" Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("mailto:x@y.io", "x@y.io"),
        ("MAILTO:x@y.io?subject=Hello", "x@y.io"),
        ("<ada@example.com>", "ada@example.com"),
        ("Ada Lovelace <Ada@Example.com>", "ada@example.com"),
        ("\"Lovelace, Ada\" < ada@example.com >", "ada@example.com"),
        ("first+crm@sub.example.co.uk", "first+crm@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("user_name-1@my-company.com", "user_name-1@my-company.com"),
        ("ada@example.com.", "ada@example.com"),
        ("\u{a0}ada@example.com\u{a0}", "ada@example.com"),
        ("jürgen@müller.de", "jürgen@xn--mller-kva.de"),
        ("info@xn--mller-kva.de", "info@xn--mller-kva.de"),
        ("a@b.xn--p1ai", "a@b.xn--p1ai"),
        ("A@B.CD", "a@b.cd"),
    ];
    for (input, want) in cases {
        assert_eq!(ok(email(input)), want, "{input:?}");
    }
}

#[test]
fn clean_email_rejects_non_addresses() {
    let bad = [
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada@ex@ample.com",
        "ada lovelace@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "ada..lovelace@example.com",
        "ada@example..com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exa_mple.com",
        "ada@example.c",
        "ada@example.c0m",
        "ada@127.0.0.1",
        "ada@[127.0.0.1]",
        "\"ada lovelace\"@example.com",
        "ada@example.com>",
        "mailto:",
        "<>",
        "n/a",
        "ada(at)example.com",
    ];
    for input in bad {
        assert_eq!(reason(email(input)), "not an email address", "{input:?}");
    }
    let long_local = format!("{}@example.com", "a".repeat(65));
    assert!(email(&long_local).is_err());
    let long_label = format!("ada@{}.com", "a".repeat(64));
    assert!(email(&long_label).is_err());
}

#[test]
fn clean_email_empty_is_null() {
    assert_eq!(email(""), Ok(None));
    assert_eq!(email("  \t"), Ok(None));
}

// --- phone

#[test]
fn clean_phone_to_e164() {
    let cases = [
        ("(415) 555-2671", Some("US"), "+14155552671"),
        ("415.555.2671", Some("us"), "+14155552671"),
        ("1-415-555-2671", Some("US"), "+14155552671"),
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("+44 20 7946 0958", None, "+442079460958"),
        ("+44 20 7946 0958", Some("US"), "+442079460958"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", Some("GB"), "+442079460958"),
        ("020 7946 0958", Some("United Kingdom"), "+442079460958"),
        ("07911 123456", Some("uk"), "+447911123456"),
        ("0049 30 123456", None, "+4930123456"),
        ("0049 30 123456", Some("US"), "+4930123456"),
        ("030 123456", Some("DE"), "+4930123456"),
        ("+49 (0) 30 123456", Some("FR"), "+4930123456"),
        ("01 23 45 67 89", Some("FR"), "+33123456789"),
        ("011 49 30 123456", Some("US"), "+4930123456"),
        ("(415) 555-2671 ext. 12", Some("US"), "+14155552671"),
        ("415-555-2671 x12", Some("US"), "+14155552671"),
        ("+1 415 555 2671 ext 12", None, "+14155552671"),
        ("tel:+1-415-555-2671", None, "+14155552671"),
        ("1-800-FLOWERS", Some("US"), "+18003569377"),
        ("\u{a0}+14155552671\u{a0}", None, "+14155552671"),
    ];
    for (input, region, want) in cases {
        assert_eq!(ok(phone(input, region)), want, "{input:?} {region:?}");
    }
}

/// Every region's example numbers, each as a number of every region
/// sharing its country code, then each with its last digits changed, cut
/// or lengthened, and NANP numbers over every area code: the quick
/// validity check answers as `phonenumber::is_valid` does for each.
#[test]
fn phone_validity_is_the_crates() {
    use phonenumber::metadata::DATABASE;
    let mut nationals: Vec<(u16, String)> = Vec::new();
    for meta in DATABASE.iter() {
        let types = std::iter::once(Some(meta.descriptors().general())).chain(number_types(meta));
        for ex in types.flatten().filter_map(|t| t.example()) {
            let code = meta.country_code();
            nationals.push((code, ex.to_owned()));
            // Variations: the last digit each of 0..9, one digit fewer,
            // one more.
            let stem = &ex[..ex.len() - 1];
            for d in '0'..='9' {
                nationals.push((code, format!("{stem}{d}")));
            }
            nationals.push((code, stem.to_owned()));
            nationals.push((code, format!("{ex}7")));
        }
    }
    // NANP: every area code, two exchanges each (one a 555 number).
    for area in 200..1000 {
        nationals.push((1, format!("{area}5552671")));
        nationals.push((1, format!("{area}2530000")));
    }
    let mut valid = 0;
    for (code, national) in &nationals {
        let Ok(n) = phonenumber::parse(None, format!("+{code}{national}")) else {
            continue;
        };
        let want = phonenumber::is_valid(&n);
        assert_eq!(is_valid_number(&n), want, "+{code} {national}");
        valid += usize::from(want);
    }
    // Both answers are well represented.
    assert!(
        valid > 2_000 && nationals.len() - valid > 2_000,
        "{valid} of {}",
        nationals.len()
    );
}

#[test]
fn clean_phone_rejects_invalid_numbers() {
    assert_eq!(
        reason(phone("555-1234", Some("US"))),
        "not a valid phone number for region US"
    );
    assert_eq!(
        reason(phone("12", Some("DE"))),
        "not a valid phone number for region DE"
    );
    assert_eq!(
        reason(phone("n/a", Some("GB"))),
        "not a valid phone number for region GB"
    );
    assert_eq!(
        reason(phone("+1 000 000 0000", None)),
        "not a valid phone number"
    );
    assert_eq!(
        reason(phone("+999 123 456 789", None)),
        "not a valid phone number"
    );
    assert_eq!(
        reason(phone("(415) 555-2671", None)),
        "no country code in the phone number and no default region"
    );
    assert_eq!(
        reason(phone("(415) 555-2671", Some(" "))),
        "no country code in the phone number and no default region"
    );
    assert_eq!(
        reason(phone("(415) 555-2671", Some("Narnia"))),
        "unknown phone region \"Narnia\""
    );
    assert_eq!(
        reason(phone("123 456", Some("AQ"))),
        "no phone numbering plan for region AQ"
    );
}

#[test]
fn clean_phone_empty_is_null_and_garbage_never_panics() {
    assert_eq!(phone("", Some("US")), Ok(None));
    assert_eq!(phone(" ", None), Ok(None));
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet: Vec<char> = "0123456789+()-. xext;=#*tel:\u{a0}٠١٢".chars().collect();
    for _ in 0..5_000 {
        let len = rng.usize(0..30);
        let s: String = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        for region in [None, Some("US"), Some("DE"), Some("IN")] {
            let _ = phone(&s, region);
        }
    }
}

// --- domain

#[test]
fn clean_domain_from_urls_hosts_and_addresses() {
    let cases = [
        ("https://www.Acme.com/about?x=1", "acme.com"),
        ("acme.com.", "acme.com"),
        ("http://user@eu.acme.co.uk:8080/", "eu.acme.co.uk"),
        ("http://user:pw@www.acme.com:443/x#top", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("WWW.ACME.COM/contact", "acme.com"),
        ("acme.com:8080", "acme.com"),
        ("//acme.com/path", "acme.com"),
        ("ftp://files.acme.com", "files.acme.com"),
        ("sales@Acme.com", "acme.com"),
        ("mailto:sales@acme.com", "acme.com"),
        ("eu.acme.com", "eu.acme.com"),
        ("www2.acme.com", "www2.acme.com"),
        ("www.com", "www.com"),
        ("https://münchen.de/", "xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("https://acme.com?utm_source=hubspot", "acme.com"),
        (" \u{a0}acme.io ", "acme.io"),
    ];
    for (input, want) in cases {
        assert_eq!(ok(domain(input)), want, "{input:?}");
    }
}

#[test]
fn clean_domain_rejects_non_domains() {
    let bad = [
        "Acme Inc",
        "acme",
        "localhost",
        "http://localhost:3000",
        "192.168.0.1",
        "http://[::1]/",
        "n/a",
        "-",
        "acme .com",
        "acme_corp.com",
        "https://",
        "acme.c",
        "mailto:",
        "file:///etc/passwd",
    ];
    for input in bad {
        assert_eq!(
            reason(domain(input)),
            "not a website or domain",
            "{input:?}"
        );
    }
    assert_eq!(domain("  "), Ok(None));
}

// --- country

#[test]
fn clean_country_names_codes_and_aliases() {
    let cases = [
        ("us", "US"),
        ("GB", "GB"),
        ("USA", "US"),
        ("DEU", "DE"),
        ("United States", "US"),
        ("United States of America", "US"),
        ("U.S.", "US"),
        ("U.S.A.", "US"),
        ("the United States", "US"),
        ("Germany", "DE"),
        ("Deutschland", "DE"),
        ("UK", "GB"),
        ("U.K.", "GB"),
        ("United Kingdom", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("Scotland", "GB"),
        ("Wales", "GB"),
        ("Northern Ireland", "GB"),
        ("Holland", "NL"),
        ("The Netherlands", "NL"),
        ("Netherlands, The", "NL"),
        ("netherlands", "NL"),
        ("South Korea", "KR"),
        ("Korea, Republic of", "KR"),
        ("Korea, Democratic People's Republic of", "KP"),
        ("Russia", "RU"),
        ("Russian Federation", "RU"),
        ("Czech Republic", "CZ"),
        ("Czechia", "CZ"),
        ("Ivory Coast", "CI"),
        ("Côte d'Ivoire", "CI"),
        ("côte d’ivoire", "CI"),
        ("COTE D'IVOIRE", "CI"),
        ("Vietnam", "VN"),
        ("Viet Nam", "VN"),
        ("  france ", "FR"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Åland Islands", "AX"),
        ("Curaçao", "CW"),
        ("Réunion", "RE"),
        ("Iran, Islamic Republic of", "IR"),
        ("Tanzania, United Republic of", "TZ"),
        ("Bolivia, Plurinational State of", "BO"),
        ("Venezuela, Bolivarian Republic of", "VE"),
        ("Congo, the Democratic Republic of the", "CD"),
        ("Democratic Republic of the Congo", "CD"),
        ("Congo", "CG"),
        ("Virgin Islands, British", "VG"),
        ("Virgin Islands, U.S.", "VI"),
        ("Holy See (Vatican City State)", "VA"),
        ("Taiwan", "TW"),
        ("Taiwan, Province of China", "TW"),
        ("Hong Kong", "HK"),
        ("Lao People's Democratic Republic", "LA"),
        ("Micronesia, Federated States of", "FM"),
        ("Saint Helena, Ascension and Tristan da Cunha", "SH"),
        ("Bonaire, Sint Eustatius and Saba", "BQ"),
        ("Sint Maarten (Dutch part)", "SX"),
        ("Saint Martin (French part)", "MF"),
        ("Falkland Islands (Malvinas)", "FK"),
        ("Cocos (Keeling) Islands", "CC"),
        ("Heard Island and McDonald Islands", "HM"),
        ("Timor-Leste", "TL"),
        ("Guinea-Bissau", "GW"),
        ("UAE", "AE"),
        ("United Arab Emirates", "AE"),
        ("Schweiz", "CH"),
        ("España", "ES"),
        ("Österreich", "AT"),
        ("Kosovo", "XK"),
    ];
    for (input, want) in cases {
        assert_eq!(ok(country(input)), want, "{input:?}");
    }
}

#[test]
fn clean_country_rejects_unknown() {
    for input in [
        "Narnia",
        "Europe",
        "EU",
        "California",
        "Korea",
        "XX",
        "ZZZ",
        "-",
        "n/a",
        "N / A",
    ] {
        assert_eq!(reason(country(input)), "not a country", "{input:?}");
    }
    assert_eq!(country(" "), Ok(None));
}

/// The 249 ISO 3166-1 alpha-2 codes as of 2024, each found by its code,
/// its alpha-3 and the table's own name.
#[test]
fn clean_country_covers_iso_3166_1() {
    const ISO: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG \
        BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR \
        CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD \
        GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO \
        IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU \
        LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE \
        NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS \
        RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH \
        TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT \
        ZA ZM ZW";
    let codes: Vec<&str> = ISO.split_whitespace().collect();
    assert_eq!(codes.len(), 249);
    for code in &codes {
        assert_eq!(ok(country(code)), *code);
        assert_eq!(ok(country(&code.to_lowercase())), *code);
    }
    for c in celes::Country::get_countries() {
        assert!(
            codes.contains(&c.alpha2) || c.alpha2 == "XK",
            "{}",
            c.alpha2
        );
        assert_eq!(ok(country(c.alpha3)), c.alpha2, "{}", c.alpha3);
        assert_eq!(ok(country(c.long_name)), c.alpha2, "{}", c.long_name);
    }
}

// --- name keys

#[test]
fn name_key_folds_people() {
    let cases = [
        ("Ada Lovelace", "ada lovelace"),
        ("  ADA   LOVELACE ", "ada lovelace"),
        ("Zoë O’Brien-Smith", "zoe obrien smith"),
        ("José  García", "jose garcia"),
        ("Jürgen Müller", "jurgen muller"),
        ("Günther Straße", "gunther strasse"),
        ("Søren Kierkegaard", "soren kierkegaard"),
        ("Łukasz Żółć", "lukasz zolc"),
        ("Lovelace, Ada", "lovelace ada"),
        ("J.R.R. Tolkien", "jrr tolkien"),
        ("Dr. Ada Lovelace (CTO)", "dr ada lovelace cto"),
        ("ＡＣＭＥ", "acme"),
        ("İlhan", "ilhan"),
        ("Иван Петров", "иван петров"),
        ("Ada\u{a0}Lovelace", "ada lovelace"),
    ];
    for (input, want) in cases {
        assert_eq!(name_key(input).as_deref(), Some(want), "{input:?}");
    }
    assert_eq!(name_key(""), None);
    assert_eq!(name_key(" -- , . "), None);
}

#[test]
fn company_key_drops_legal_forms() {
    let cases = [
        ("Acme, Inc.", "acme"),
        ("ACME Corporation", "acme"),
        ("Acme Inc", "acme"),
        ("acme incorporated", "acme"),
        ("The Acme Company", "acme"),
        ("Acme Co., Ltd.", "acme"),
        ("Acme LLC", "acme"),
        ("Acme, L.L.C.", "acme"),
        ("Acme Ltd", "acme"),
        ("Acme Limited", "acme"),
        ("Acme Pty Ltd", "acme"),
        ("Acme Pte. Ltd.", "acme"),
        ("Müller GmbH", "muller"),
        ("Müller GmbH & Co. KG", "muller"),
        ("Siemens AG", "siemens"),
        ("Airbus SE", "airbus"),
        ("Renault S.A.", "renault"),
        ("Renault S. A.", "renault"),
        ("Renault SAS", "renault"),
        ("Fiat S.p.A.", "fiat"),
        ("Acme S.r.l.", "acme"),
        ("Philips N.V.", "philips"),
        ("Acme B.V.", "acme"),
        ("Acme plc", "acme"),
        ("Nokia Oyj", "nokia"),
        ("Volvo AB", "volvo"),
        ("Maersk A/S", "maersk"),
        ("Equinor ASA", "equinor"),
        ("Acme Sdn Bhd", "acme"),
        ("Acme S.A. de C.V.", "acme"),
        ("Smith & Co", "smith"),
        ("Johnson & Johnson", "johnson and johnson"),
        ("Johnson and Johnson Inc.", "johnson and johnson"),
        ("The Coca-Cola Company", "coca cola"),
        ("Société Générale S.A.", "societe generale"),
        ("3M Company", "3m"),
        ("Acme Holdings", "acme holdings"),
        ("The Company", "company"),
        ("Inc.", "inc"),
        ("The", "the"),
        ("Acme Corp. (Europe)", "acme corp europe"),
    ];
    for (input, want) in cases {
        assert_eq!(company_key(input).as_deref(), Some(want), "{input:?}");
    }
    assert_eq!(company_key("  "), None);
    assert_eq!(company_key(", ."), None);
}

#[test]
fn clean_never_panics_on_garbage() {
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet: Vec<char> = "aZ09@.:/<>-_+ ,'’()xn\u{a0}\u{200b}éßİ٠🙂mailtohttpwww"
        .chars()
        .collect();
    for _ in 0..20_000 {
        let len = rng.usize(0..24);
        let s: String = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let _ = (text(&s), email(&s), domain(&s), country(&s));
        let _ = (name_key(&s), company_key(&s), phone(&s, Some(&s)));
    }
}

// --- dispatch

#[test]
fn clean_by_kind() {
    assert_eq!("Email".parse(), Ok(Kind::Email));
    assert_eq!(" phone ".parse(), Ok(Kind::Phone));
    assert!("zip".parse::<Kind>().is_err());
    assert_eq!(
        clean(Kind::Phone, "020 7946 0958", Some("GB")),
        Ok(Some("+442079460958".into()))
    );
    assert_eq!(
        clean(Kind::Domain, "x", None).unwrap_err().reason(),
        NOT_DOMAIN
    );
    assert_eq!(clean(Kind::Country, "", None), Ok(None));
    assert_eq!(
        clean(Kind::Email, "a@b.co", None),
        Ok(Some("a@b.co".into()))
    );
}

// --- cost per value

/// `cargo test --release -p crm_sync_core clean_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn clean_cost_per_value() {
    use std::time::Instant;
    const N: usize = 200_000;
    let mut rng = fastrand::Rng::with_seed(1);
    // Mostly valid numbers as CRMs hold them, one in ten international,
    // one in ten junk (invalid numbers cost the most: every number type
    // is tried).
    let area = [
        "415", "212", "646", "312", "617", "202", "303", "206", "512", "713",
    ];
    let phones: Vec<String> = (0..N)
        .map(|i| {
            let a = area[rng.usize(..area.len())];
            let b = rng.u32(200..1000);
            let c = rng.u32(0..10_000);
            match i % 10 {
                0 => format!("({a}) {b}-{c:04}"),
                1 => format!("+1 {a} {b} {c:04}"),
                2 => format!("{a}.{b}.{c:04} x12"),
                3 => format!("1-{a}-{b}-{c:04}"),
                4 => format!("{a}{b}{c:04}"),
                5 => format!("{a}-{b}-{c:04}"),
                6 => format!("({a}) {b} {c:04}"),
                7 => format!("+44 20 7946 {c:04}"),
                8 => format!("0049 30 {b}{c:04}"),
                _ => format!("{b}-{c:04}"),
            }
        })
        .collect();
    let emails: Vec<String> = (0..N)
        .map(|i| match i % 4 {
            0 => format!(" First.Last{i}@Example{}.COM ", i % 97),
            1 => format!("Name {i} <user{i}@sub.example.co.uk>"),
            2 => format!("mailto:u{i}@acme.io"),
            _ => format!("bad {i}@example"),
        })
        .collect();

    let t = Instant::now();
    let _ = phone("+14155552671", None);
    eprintln!("phone first call (metadata load): {:?}", t.elapsed());

    let t = Instant::now();
    let valid = phones
        .iter()
        .filter(|p| matches!(phone(p, Some("US")), Ok(Some(_))))
        .count();
    let el = t.elapsed();
    eprintln!(
        "phone: {N} values ({valid} valid) in {el:?}: {:.2} µs/value",
        el.as_secs_f64() * 1e6 / N as f64
    );

    let t = Instant::now();
    let valid = emails
        .iter()
        .filter(|e| matches!(email(e), Ok(Some(_))))
        .count();
    let el = t.elapsed();
    eprintln!(
        "email: {N} values ({valid} valid) in {el:?}: {:.2} µs/value",
        el.as_secs_f64() * 1e6 / N as f64
    );
}

// --- field(), by kind

#[test]
fn fields_are_cleaned_by_kind() {
    assert_eq!(
        field("numeric", " 1,250.50 ", None),
        Ok(Some("1250.50".into()))
    );
    assert!(field("numeric", "lots", None).is_err());
    assert_eq!(
        field("date", "2024-03-01T10:00:00Z", None),
        Ok(Some("2024-03-01".into()))
    );
    assert_eq!(
        field("date", "2024-03-01", None),
        Ok(Some("2024-03-01".into()))
    );
    assert!(field("date", "soon", None).is_err());
    assert_eq!(field("timestamptz", "", None), Ok(None));
    assert_eq!(
        field("text", "  Ada \n Lovelace ", None),
        Ok(Some("Ada Lovelace".into()))
    );
    assert_eq!(
        field("email", "ADA@Example.com", None),
        Ok(Some("ada@example.com".into()))
    );
    assert!(field("email", "ada at example", None).is_err());
}

#[test]
fn postgres_timestamptz_text_is_read() {
    for (t, want) in [
        ("2024-06-01 00:00:01+00", "2024-06-01T00:00:01+00:00"),
        ("2024-06-01 00:00:01.5+00", "2024-06-01T00:00:01.500+00:00"),
        ("2023-01-01T00:00:00.000+0000", "2023-01-01T00:00:00+00:00"),
    ] {
        assert_eq!(
            field("timestamptz", t, None),
            Ok(Some(want.to_owned())),
            "{t}"
        );
    }
}

/// The phone metadata's patterns are not syntax-checked when the library
/// loads them (vendor/regex-cache: that check was most of the load), so
/// here every one of them compiles: one that did not would fail the merge
/// at its first use instead.
#[test]
fn every_phone_metadata_pattern_compiles() {
    use phonenumber::metadata::{Format, DATABASE};
    use phonenumber::Type;
    let formats = |fs: &[Format]| {
        for f in fs {
            f.pattern().is_match("");
            for l in f.leading_digits() {
                l.is_match("");
            }
        }
    };
    let mut regions = 0;
    let mut descriptors = 0;
    for m in DATABASE.iter() {
        regions += 1;
        for r in [
            m.international_prefix(),
            m.national_prefix_for_parsing(),
            m.leading_digits(),
        ]
        .into_iter()
        .flatten()
        {
            r.is_match("");
        }
        formats(m.formats());
        formats(m.international_formats());
        for kind in [
            Type::FixedLine,
            Type::Mobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::PersonalNumber,
            Type::Voip,
            Type::Pager,
            Type::Uan,
            Type::Emergency,
            Type::Voicemail,
            Type::ShortCode,
            Type::StandardRate,
            Type::Carrier,
            Type::NoInternational,
        ] {
            if let Some(d) = m.descriptors().get(kind) {
                d.national_number().is_match("");
                descriptors += 1;
            }
        }
        m.descriptors().general().national_number().is_match("");
    }
    assert!(
        regions > 200 && descriptors > 1000,
        "{regions} regions, {descriptors} descriptors"
    );
}
