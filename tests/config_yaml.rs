//! The rules file's YAML parser at its edges: the example config, what users rely on (line and
//! column in errors, unknown keys refused, actions written `- kind: {...}`) and hostile inputs
//! (an alias bomb, deep nesting, a huge scalar), each refused quickly with a clear message.
//! The messages pinned here are the ones `serde_yaml` gave before the move to `yaml_serde`.

use relay_shared::rules::config::{Config, MAX_CONFIG_BYTES};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest a hostile input may take to be refused (debug build, a shared machine).
const QUICK: Duration = Duration::from_secs(5);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The problems of a config that must not load, and how long finding them took.
fn refused(yaml: &str) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let problems = match Config::parse(yaml, "test") {
        Ok(_) => panic!("the config loaded"),
        Err(e) => e.problems,
    };
    (problems, start.elapsed())
}

const ONE_RULE: &str = "rules:\n  - name: welcome\n    on: [contact.created]\n    actions:\n      - add_to_list: {list: 1}\n      - trigger_event:\n          name: welcome\n          payload: {first: '{{ contact.first_name }}'}\n";

#[test]
fn the_example_config_loads() {
    let config = Config::load(&repo().join("config/relay.yaml")).expect("the example loads");
    assert!(!config.rules.is_empty());
    assert!(config.rule("welcome").is_some(), "{:?}", config.rules);
}

#[test]
fn actions_are_single_key_maps_in_block_and_flow_style() {
    let block = Config::parse(ONE_RULE, "t").expect("block style loads");
    let flow = Config::parse(
        "rules: [{name: welcome, on: [contact.created], actions: [{add_to_list: {list: 1}}, {trigger_event: {name: welcome, payload: {first: '{{ contact.first_name }}'}}}]}]",
        "t",
    )
    .expect("flow style loads");
    assert_eq!(format!("{:?}", block.rules), format!("{:?}", flow.rules));
    assert_eq!(block.rules[0].actions.len(), 2);
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let (p, _) = refused("rules:\n  - name: a\n    on: [x\n");
    assert_eq!(
        p,
        ["did not find expected ',' or ']' at line 4 column 1, while parsing a flow sequence at line 3 column 9"]
    );
    let (p, _) = refused("rules:\n  - name: a\n\tactions: []\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("at line 3 column 1"), "{p:?}");
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let (p, _) = refused("colour: red\nrules: []\n");
    assert_eq!(p, ["colour: unknown field `colour`, expected one of `smartemailing`, `delivery`, `schedules`, `outbound`, `inbound`, `server`, `retention`, `rules`"]);
    let (p, _) = refused("delivery:\n  timeot: 3s\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("delivery: unknown field `timeot`, expected one of"),
        "{p:?}"
    );
    assert!(p[0].ends_with("at line 2 column 3"), "{p:?}");
    let (p, _) = refused(&ONE_RULE.replace("list: 1}", "list: 1, colour: red}"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("rules[welcome].actions[0]: unknown field `colour`"),
        "{p:?}"
    );
    assert!(p[0].ends_with("at line 5 column 32"), "{p:?}");
    let (p, _) = refused("rules:\n  - name: a\n    on: [x]\n    actions:\n      - teleport: {}\n");
    assert!(
        p[0].starts_with("rules[a].actions[0]: unknown variant `teleport`, expected one of"),
        "{p:?}"
    );
    assert!(p[0].ends_with("at line 5 column 9"), "{p:?}");
}

#[test]
fn a_wrong_type_names_its_line_and_column() {
    let (p, _) = refused("delivery:\n  max_requests_per_second: [1]\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("delivery: invalid type: sequence, expected f64"),
        "{p:?}"
    );
    assert!(p[0].ends_with("at line 2 column 28"), "{p:?}");
    // A file that is not a mapping at all is the one shape error without a place (the whole
    // file is at fault): as with serde_yaml.
    let (p, _) = refused("[1, 2]");
    assert_eq!(p, ["invalid type: sequence, expected struct RawConfig"]);
}

/// Nine levels of nine aliases each: 9^9 (about 387 million) strings if expanded.
fn alias_bomb() -> String {
    let mut yaml = String::from("a0: &a0 [\"lol\"]\n");
    for level in 1..10 {
        let below = format!("*a{}", level - 1);
        let items = [below.as_str(); 9].join(", ");
        yaml.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    yaml
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let bomb: String = alias_bomb()
        .lines()
        .map(|l| format!("              {l}\n"))
        .collect();
    // Where it is read (a payload takes any value) and where it is not (an unknown key).
    let in_payload = format!(
        "rules:\n  - name: a\n    on: [x]\n    actions:\n      - trigger_event:\n          name: a\n          payload:\n            bomb:\n{bomb}"
    );
    let (p, took) = refused(&in_payload);
    assert!(took < QUICK, "{took:?}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("repetition limit exceeded"), "{p:?}");
    let (p, took) = refused(&format!("{}rules: []\n", alias_bomb()));
    assert!(took < QUICK, "{took:?}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("unknown field `a0`, expected one of"),
        "{p:?}"
    );
}

#[test]
fn deep_nesting_is_refused_quickly_with_its_place() {
    let payload = |value: &str| {
        format!("rules:\n  - name: a\n    on: [x]\n    actions:\n      - trigger_event:\n          name: a\n          payload: {value}\n")
    };
    // Flow nesting, refused before the parser (whose scanner takes time in the square of the
    // depth: 40 000 levels took 15 s) at the 129th level; the file of brackets as large as the
    // size limit allows too.
    let almost = MAX_CONFIG_BYTES / 2 - 100;
    for (yaml, place) in [
        (
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "line 1 column 129",
        ),
        (
            payload(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            "line 7 column 148",
        ),
        (
            payload(&format!("{}1{}", "{a: ".repeat(10_000), "}".repeat(10_000))),
            "line 7 column 532",
        ),
        (
            format!("{}{}", "[".repeat(almost), "]".repeat(almost)),
            "line 1 column 129",
        ),
    ] {
        let (p, took) = refused(&yaml);
        assert!(took < QUICK, "{took:?}");
        assert_eq!(p, [format!("nested deeper than 128 levels at {place}")]);
    }
    // Block nesting: each level is indented once more, so the size limit bounds its depth;
    // the parser refuses it at its own limit.
    let mut block = String::from("rules:\n  - name: a\n    on: [x]\n    actions:\n      - trigger_event:\n          name: a\n          payload:\n");
    for level in 0..1000 {
        block.push_str(&" ".repeat(12 + level));
        block.push_str("- \n");
    }
    let (p, took) = refused(&block);
    assert!(took < QUICK, "{took:?}");
    assert_eq!(p, ["recursion limit exceeded at line 130 column 135"]);
}

#[test]
fn a_huge_scalar_is_refused_before_it_is_parsed() {
    let huge = format!("rules:\n  - name: {}\n", "a".repeat(50 * 1024 * 1024));
    let (p, took) = refused(&huge);
    assert!(took < QUICK, "{took:?}");
    assert_eq!(
        p,
        [format!(
            "the file is {} bytes; a rules file may be at most {MAX_CONFIG_BYTES} bytes",
            huge.len()
        )]
    );
    // From a file, without reading it whole first.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(50 * 1024 * 1024).unwrap();
    let start = Instant::now();
    let e = Config::load(&path).unwrap_err();
    assert!(start.elapsed() < QUICK);
    assert_eq!(
        e.problems,
        [format!(
            "the file is {} bytes; a rules file may be at most {MAX_CONFIG_BYTES} bytes",
            50 * 1024 * 1024
        )]
    );
}

#[test]
fn a_config_just_under_the_size_limit_still_loads() {
    let mut yaml = String::from("# padding\n");
    let rules = "rules: []\n";
    while yaml.len() + 80 + rules.len() < MAX_CONFIG_BYTES {
        yaml.push_str(&format!("# {}\n", "x".repeat(76)));
    }
    yaml.push_str(rules);
    assert!(yaml.len() <= MAX_CONFIG_BYTES);
    Config::parse(&yaml, "t").expect("loads");
}
