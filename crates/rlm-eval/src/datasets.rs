//! Seeded task generators for the paper's benchmark families. No download: every task is made
//! from a seed and a target size, with an exact gold answer.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rlm::ContextInput;
use serde::{Deserialize, Serialize};

use crate::score::Scorer;

/// A benchmark family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// One needle (a key → value fact) at a chosen depth (see [`needle_depth`]) in a long varied
    /// haystack.
    Sniah,
    /// Many short records whose category is implied by their text; count by category.
    Oolong,
    /// Records again; the answer is the set of pairs meeting a condition.
    OolongPairs,
    /// Hundreds to thousands of short documents; the answer needs 3 hops across them.
    MultiHop,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 4] = [
        Family::Sniah,
        Family::Oolong,
        Family::OolongPairs,
        Family::MultiHop,
    ];

    /// The family's name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sniah => "s-niah",
            Family::Oolong => "oolong",
            Family::OolongPairs => "oolong-pairs",
            Family::MultiHop => "multi-hop",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s || format!("{f:?}").eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown dataset {s:?}; known: s-niah, oolong, oolong-pairs, multi-hop")
            })
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One question with its context and gold answer.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique within a dataset.
    pub id: String,
    /// The family (None for user datasets).
    pub family: Option<Family>,
    /// The context.
    pub context: ContextInput,
    /// The question.
    pub question: String,
    /// The gold answer.
    pub answer: String,
    /// How to score.
    pub scorer: Scorer,
    /// About how many tokens the context is (characters / 4).
    pub context_tokens: u64,
}

/// Make a task of `family` with a context of about `tokens` tokens.
pub fn generate(family: Family, tokens: u64, seed: u64) -> Task {
    let mut rng = StdRng::seed_from_u64(seed ^ (family as u64) << 56);
    let chars = (tokens as usize).max(500) * 4;
    let (context, question, answer, scorer) = match family {
        Family::Sniah => sniah(&mut rng, chars, needle_depth(seed)),
        Family::Oolong => oolong(&mut rng, chars),
        Family::OolongPairs => oolong_pairs(&mut rng, chars),
        Family::MultiHop => multi_hop(&mut rng, chars),
    };
    let context_tokens = match &context {
        ContextInput::Text(t) => t.chars().count() as u64 / 4,
        ContextInput::Documents(d) => d.iter().map(|x| x.chars().count() as u64).sum::<u64>() / 4,
        ContextInput::Json(v) => v.to_string().len() as u64 / 4,
    };
    Task {
        id: format!("{}-{tokens}-{seed}", family.name()),
        family: Some(family),
        context,
        question,
        answer,
        scorer,
        context_tokens,
    }
}

const FIRST: &[&str] = &[
    "Amara", "Bilal", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jonas", "Keiko",
    "Lior", "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rafael", "Sana", "Tomas", "Uma",
    "Viktor", "Wen", "Yara", "Zofia",
];
const LAST: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Ortiz",
    "Weiss",
    "Mehta",
    "Dubois",
    "Novak",
    "Haddad",
    "Moreau",
    "Kowalski",
    "Silva",
    "Nakamura",
    "Brennan",
    "Costa",
    "Fischer",
    "Ivanova",
    "Jensen",
    "Khan",
    "Lopez",
];
const CITIES: &[&str] = &[
    "Port Aldern",
    "Kessington",
    "Valmora",
    "Brightwater",
    "Ostrava Nova",
    "Calder Bay",
    "Redfield",
    "Marrowick",
    "Tessaly",
    "Dunmore",
    "Elmsgate",
    "Fairholt",
    "Granvik",
    "Hollowmere",
    "Ironbridge",
    "Juniper Falls",
];
const THINGS: &[&str] = &[
    "quarterly budget",
    "safety inspection",
    "supplier contract",
    "training schedule",
    "server migration",
    "customer survey",
    "warehouse audit",
    "marketing plan",
    "hiring round",
    "energy report",
    "fleet maintenance",
    "design review",
];
const ORGS: &[&str] = &[
    "city council",
    "regional hospital",
    "harbour authority",
    "university library",
    "water board",
    "transit agency",
    "chamber of commerce",
    "school district",
];

fn person(rng: &mut StdRng) -> String {
    format!(
        "{} {}",
        FIRST.choose(rng).unwrap_or(&"Ada"),
        LAST.choose(rng).unwrap_or(&"Lane")
    )
}

/// One realistic-looking filler sentence.
fn filler_sentence(rng: &mut StdRng) -> String {
    let name = person(rng);
    let city = *CITIES.choose(rng).unwrap_or(&"Redfield");
    let thing = *THINGS.choose(rng).unwrap_or(&"report");
    let org = *ORGS.choose(rng).unwrap_or(&"council");
    let n = rng.random_range(2..95);
    let year = rng.random_range(2009..2025);
    let month = ["January", "March", "May", "July", "September", "November"]
        .choose(rng)
        .copied()
        .unwrap_or("May");
    match rng.random_range(0..10) {
        0 => format!("{name} reviewed the {thing} for the {org} in {city} during {month} {year}."),
        1 => format!("In {year}, the {org} of {city} expanded its {thing} by {n} percent."),
        2 => format!("According to {name}, the {thing} took {n} days longer than planned."),
        3 => format!(
            "The {org} in {city} postponed the {thing} until {month}, citing staff shortages."
        ),
        4 => format!(
            "{name} and a team of {n} volunteers presented the {thing} to residents of {city}."
        ),
        5 => format!(
            "Residents of {city} asked the {org} to publish the {thing} before the {month} meeting."
        ),
        6 => format!("A {thing} completed in {year} found {n} issues, most of them minor."),
        7 => format!("{name} moved to {city} in {year} to lead the {thing} at the {org}."),
        8 => format!("The {thing} budget for {city} rose to {n} thousand after the {month} vote."),
        _ => format!("Minutes from the {org} note that {name} raised the {thing} twice in {year}."),
    }
}

fn filler(rng: &mut StdRng, chars: usize) -> String {
    let mut s = String::with_capacity(chars + 200);
    let mut in_par = 0;
    while s.len() < chars {
        s.push_str(&filler_sentence(rng));
        in_par += 1;
        if in_par >= rng.random_range(4..8) {
            s.push_str("\n\n");
            in_par = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

type Generated = (ContextInput, String, String, Scorer);

/// Where the S-NIAH needle goes, as a fraction of the haystack: the golden-ratio sequence of the
/// seed, so consecutive seeds spread evenly over every depth.
pub fn needle_depth(seed: u64) -> f64 {
    (seed as f64 * 0.618_033_988_749_895).fract()
}

fn sniah(rng: &mut StdRng, chars: usize, depth: f64) -> Generated {
    let key = format!(
        "{}-{}",
        ["Falcon", "Juniper", "Cobalt", "Harbor", "Saffron", "Orbit"]
            .choose(rng)
            .unwrap_or(&"Falcon"),
        rng.random_range(10..99)
    );
    let value = rng.random_range(10_000..99_999).to_string();
    let needle = format!("The access code for project {key} is {value}.");
    let mut text = filler(rng, chars);
    // Insert at the chosen depth, on a sentence boundary.
    let at = ((text.len() as f64 * depth) as usize).min(text.len().saturating_sub(1));
    let cut = text[at..].find(". ").map_or(text.len(), |i| at + i + 2);
    text.insert_str(cut.min(text.len()), &format!("{needle} "));
    (
        ContextInput::Text(text.into()),
        format!("What is the access code for project {key}?"),
        value,
        Scorer::Contains,
    )
}

/// The kinds of problem the ticket families' tickets describe, each with the phrases the
/// generator writes for it (a ticket's kind is implied by its phrase, never labelled).
pub const TICKET_KINDS: &[(&str, &[&str])] = &[
    (
        "billing",
        &[
            "I was charged twice for my subscription this month",
            "the invoice total is higher than the price I agreed to",
            "please refund the duplicate payment on my card",
            "my receipt shows a fee I never signed up for",
        ],
    ),
    (
        "technical",
        &[
            "the app crashes whenever I open the settings page",
            "I get an error 500 right after logging in",
            "the sync button spins forever and nothing updates",
            "exports come out as empty files since the update",
        ],
    ),
    (
        "shipping",
        &[
            "my parcel has not arrived after two weeks",
            "the courier left the box at the wrong address",
            "tracking has shown the same depot for nine days",
            "the package arrived crushed and half empty",
        ],
    ),
    (
        "account",
        &[
            "I cannot reset my password with the emailed link",
            "please merge my two profiles into one",
            "my username changed by itself overnight",
            "I want to close my profile and delete my data",
        ],
    ),
    (
        "warranty",
        &[
            "the blender stopped working four months after purchase and should still be covered",
            "the replacement under guarantee also failed after a week",
            "I need the repair covered since the unit is still within its coverage period",
        ],
    ),
];

const OPENERS: &[&str] = &[
    "Hello,",
    "Hi team,",
    "Good morning.",
    "To whom it may concern:",
    "Hey,",
    "",
];
const CLOSERS: &[&str] = &[
    "Thanks.",
    "Please help.",
    "This is urgent.",
    "Regards.",
    "Any update would be appreciated.",
    "",
];

/// Records "Ticket T | user U | date | text"; returns (records text, (category, user, month) per record).
fn tickets(rng: &mut StdRng, chars: usize, weights: &[u32]) -> (String, Vec<(usize, u32, u32)>) {
    let total: u32 = weights.iter().sum();
    let mut text = String::with_capacity(chars + 200);
    let mut meta = Vec::new();
    let users = (chars / 400).clamp(30, 5000) as u32;
    let mut id = 1000;
    while text.len() < chars {
        let mut pick = rng.random_range(0..total);
        let mut cat = 0;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                cat = i;
                break;
            }
            pick -= w;
        }
        let user = rng.random_range(1..=users);
        let month = rng.random_range(1..=12u32);
        let day = rng.random_range(1..=28);
        let phrase = TICKET_KINDS[cat].1.choose(rng).copied().unwrap_or("");
        let opener = OPENERS.choose(rng).copied().unwrap_or("");
        let closer = CLOSERS.choose(rng).copied().unwrap_or("");
        text.push_str(&format!("Ticket {id} | user u{user} | 2024-{month:02}-{day:02} | {opener} {phrase}. {closer}\n").replace("|  ", "| "));
        meta.push((cat, user, month));
        id += 1;
    }
    (text, meta)
}

fn oolong(rng: &mut StdRng, chars: usize) -> Generated {
    let (text, meta) = tickets(rng, chars, &[30, 30, 25, 15, 0]);
    let cat = rng.random_range(0..4);
    let count = meta.iter().filter(|m| m.0 == cat).count();
    let name = TICKET_KINDS[cat].0;
    let question = format!(
        "Each ticket describes one kind of problem: billing, technical, shipping or account (the \
         kind is not written; it must be read from the text). How many tickets are about a {name} \
         problem? Answer with a number."
    );
    (
        ContextInput::Text(text.into()),
        question,
        count.to_string(),
        Scorer::Numeric { tolerance: 0.0 },
    )
}

fn oolong_pairs(rng: &mut StdRng, chars: usize) -> Generated {
    let (text, meta) = tickets(rng, chars, &[30, 30, 25, 15, 2]);
    let month = rng.random_range(1..=12u32);
    let users: BTreeSet<u32> = meta
        .iter()
        .filter(|m| m.0 == 4 && m.2 == month)
        .map(|m| m.1)
        .collect();
    let users: Vec<u32> = users.into_iter().collect();
    let mut pairs = Vec::new();
    for (i, a) in users.iter().enumerate() {
        for b in &users[i + 1..] {
            pairs.push(format!("(u{a}, u{b})"));
        }
    }
    let question = format!(
        "Some tickets are warranty claims (a product that failed while it should still be covered; \
         the word is not always used). List every pair of different users who both filed a \
         warranty claim in month 2024-{month:02}, as (user, user) pairs separated by semicolons. \
         Answer 'none' if there are none."
    );
    (
        ContextInput::Text(text.into()),
        question,
        pairs.join("; "),
        Scorer::SetF1,
    )
}

fn multi_hop(rng: &mut StdRng, chars: usize) -> Generated {
    let countries = [
        "Norland", "Castavia", "Meridia", "Oskavia", "Teluria", "Brevonia",
    ];
    let industries = [
        "logistics",
        "software",
        "biotech",
        "shipping",
        "textile",
        "energy",
    ];
    let jobs = [
        "engineer",
        "accountant",
        "designer",
        "analyst",
        "chemist",
        "pilot",
    ];
    let n_docs = (chars / 260).clamp(30, 40_000);
    let n_cities = (n_docs / 10).clamp(6, CITIES.len() * 8);
    let n_companies = (n_docs / 5).max(6);
    let cities: Vec<String> = (0..n_cities)
        .map(|i| {
            format!(
                "{} {}",
                CITIES[i % CITIES.len()],
                ["", "North", "East", "Upper", "West", "South", "Old", "New"][i / CITIES.len() % 8]
            )
            .trim()
            .to_string()
        })
        .collect();
    let city_country: Vec<&str> = cities
        .iter()
        .map(|_| *countries.choose(rng).unwrap_or(&"Norland"))
        .collect();
    let companies: Vec<String> = (0..n_companies)
        .map(|i| {
            format!(
                "{} {}",
                [
                    "Vexa", "Corran", "Lumo", "Tarsk", "Quell", "Brisa", "Onyx", "Pelta"
                ][i % 8],
                ["Labs", "Holdings", "Works", "Group", "Systems", "Partners"][(i / 8) % 6]
            ) + &format!(" {}", i / 48 + 1)
        })
        .collect();
    let company_city: Vec<usize> = companies
        .iter()
        .map(|_| rng.random_range(0..cities.len()))
        .collect();
    let mut docs = Vec::with_capacity(n_docs);
    for (i, c) in cities.iter().enumerate() {
        docs.push(format!(
            "{c} is a city in {}. {}",
            city_country[i],
            filler_sentence(rng)
        ));
    }
    for (i, c) in companies.iter().enumerate() {
        docs.push(format!(
            "{c} is a {} firm headquartered in {}. {}",
            industries.choose(rng).unwrap_or(&"software"),
            cities[company_city[i]],
            filler_sentence(rng)
        ));
    }
    let mut people = BTreeMap::new();
    let mut total: usize = docs.iter().map(String::len).sum();
    while total < chars {
        let p = format!("{} {}", person(rng), docs.len());
        let company = rng.random_range(0..companies.len());
        docs.push(format!(
            "Profile: {p} is a {} who works at {}. {} {}",
            jobs.choose(rng).unwrap_or(&"analyst"),
            companies[company],
            filler_sentence(rng),
            filler_sentence(rng)
        ));
        total += docs.last().map_or(0, String::len);
        people.insert(p, company);
    }
    docs.shuffle(rng);
    let (who, company) = people
        .iter()
        .nth(rng.random_range(0..people.len().max(1)))
        .map(|(p, c)| (p.clone(), *c))
        .unwrap_or_default();
    let answer = city_country[company_city[company]].to_string();
    let question =
        format!("In which country is the headquarters of the company that {who} works for?");
    (
        ContextInput::Documents(docs),
        question,
        answer,
        Scorer::Exact,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(t: &Task) -> String {
        match &t.context {
            ContextInput::Text(s) => s.to_string(),
            ContextInput::Documents(d) => d.join("\n"),
            ContextInput::Json(v) => v.to_string(),
        }
    }

    #[test]
    fn generation_is_seeded_and_sized() {
        for f in Family::ALL {
            let a = generate(f, 8_000, 7);
            let b = generate(f, 8_000, 7);
            let c = generate(f, 8_000, 8);
            assert_eq!(
                (text_of(&a), &a.question, &a.answer),
                (text_of(&b), &b.question, &b.answer),
                "{f:?} is deterministic"
            );
            assert_ne!(text_of(&a), text_of(&c), "{f:?} varies with the seed");
            assert!(
                a.context_tokens >= 7_000 && a.context_tokens <= 10_000,
                "{f:?}: {} tokens",
                a.context_tokens
            );
            let big = generate(f, 64_000, 7);
            assert!(
                big.context_tokens >= 60_000,
                "{f:?} scales: {}",
                big.context_tokens
            );
        }
    }

    #[test]
    fn gold_answers_are_right() {
        let t = generate(Family::Sniah, 8_000, 3);
        let text = text_of(&t);
        let key = t
            .question
            .trim_start_matches("What is the access code for project ")
            .trim_end_matches('?');
        assert!(text.contains(&format!(
            "The access code for project {key} is {}.",
            t.answer
        )));
        assert_eq!(text.matches("access code").count(), 1, "exactly one needle");

        let t = generate(Family::Oolong, 8_000, 4);
        let cat = ["billing", "technical", "shipping", "account"]
            .iter()
            .position(|c| t.question.contains(&format!("about a {c} problem")))
            .unwrap();
        let phrases = TICKET_KINDS[cat].1;
        let count = text_of(&t)
            .lines()
            .filter(|l| phrases.iter().any(|p| l.contains(p)))
            .count();
        assert_eq!(t.answer, count.to_string());
        assert!(
            !text_of(&t).contains("billing"),
            "categories are implied, not labelled"
        );

        let t = generate(Family::MultiHop, 8_000, 5);
        let docs = match &t.context {
            ContextInput::Documents(d) => d.clone(),
            _ => panic!(),
        };
        let who = t
            .question
            .trim_start_matches("In which country is the headquarters of the company that ")
            .trim_end_matches(" works for?");
        let profile = docs
            .iter()
            .find(|d| d.starts_with(&format!("Profile: {who} is")))
            .unwrap();
        let company = profile
            .split(" who works at ")
            .nth(1)
            .unwrap()
            .split(". ")
            .next()
            .unwrap();
        let hq = docs
            .iter()
            .find(|d| d.starts_with(&format!("{company} is a ")))
            .unwrap();
        let city = hq
            .split("headquartered in ")
            .nth(1)
            .unwrap()
            .split(". ")
            .next()
            .unwrap();
        let city_doc = docs
            .iter()
            .find(|d| d.starts_with(&format!("{city} is a city in ")))
            .unwrap();
        assert!(city_doc.contains(&format!("is a city in {}.", t.answer)));
    }

    #[test]
    fn needles_spread_over_depths() {
        let mut depths: Vec<f64> = (0..10)
            .map(|seed| {
                let t = generate(Family::Sniah, 16_000, seed);
                let text = text_of(&t);
                text.find("access code").unwrap() as f64 / text.len() as f64
            })
            .collect();
        depths.sort_by(f64::total_cmp);
        // Ten seeds put a needle in every tenth of the haystack.
        for (k, d) in depths.iter().enumerate() {
            assert!((*d - k as f64 / 10.0).abs() < 0.1, "{depths:?}");
        }
    }

    #[test]
    fn pairs_answers_match_the_records() {
        let t = generate(Family::OolongPairs, 40_000, 9);
        let month = t.question.split("month 2024-").nth(1).unwrap()[..2].to_string();
        let phrases = TICKET_KINDS[4].1;
        let users: BTreeSet<String> = text_of(&t)
            .lines()
            .filter(|l| {
                l.contains(&format!("| 2024-{month}-")) && phrases.iter().any(|p| l.contains(p))
            })
            .map(|l| {
                l.split(" | ")
                    .nth(1)
                    .unwrap()
                    .trim_start_matches("user ")
                    .to_string()
            })
            .collect();
        let n = users.len();
        let expected = n * n.saturating_sub(1) / 2;
        let got = if t.answer.is_empty() {
            0
        } else {
            t.answer.split("; ").count()
        };
        assert_eq!(got, expected);
    }
}
