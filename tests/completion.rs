//! The bash completion the package ships (`debian/completions/sega-uploader`), run by a real
//! bash against the real binary: every command `--help` lists, every option each command's
//! `--help` lists, the values it knows (`--status`, files), and `-c FILE` before the
//! command.

use std::collections::BTreeSet;
use std::process::Command;

use crate::util::*;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/debian/completions/sega-uploader"
);

/// What the completion offers for the command line `words`, the last one being the word
/// under the cursor (as bash-completion calls the function: COMP_WORDS and COMP_CWORD).
fn complete(words: &[&str]) -> BTreeSet<String> {
    let o = out(Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(
            "source \"$0\" && COMP_WORDS=(\"$@\") && COMP_CWORD=$(($# - 1)) && _sega_uploader \
             && printf '%s\\n' \"${COMPREPLY[@]}\"",
        )
        .arg(SCRIPT)
        .arg(BIN)
        .args(words)
        .output()
        .unwrap());
    assert_eq!(o.code, 0, "{words:?}: {}", o.stderr);
    assert_eq!(o.stderr, "", "{words:?}");
    o.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn help(args: &[&str]) -> String {
    let o = out(Command::new(BIN).args(args).arg("--help").output().unwrap());
    assert_eq!(o.code, 0, "{args:?} --help: {}", o.stderr);
    o.stdout
}

/// The commands of `sega-uploader --help`: the first word of each line under "Commands:".
fn commands() -> BTreeSet<String> {
    help(&[])
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The long options a `--help` lists under "Options:".
fn long_options(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|l| *l != "Options:")
        .flat_map(|l| l.split([' ', ',']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| {
            w.chars()
                .skip(2)
                .all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_completion_offers_every_command_and_option_the_binary_lists() {
    let commands = commands();
    assert!(
        commands.len() >= 9 && commands.contains("check") && commands.contains("migrate-db"),
        "{commands:?}"
    );
    assert_eq!(complete(&[""]), commands);
    assert_eq!(complete(&["-c", "/etc/sega/config.json", ""]), commands);
    assert_eq!(
        complete(&["check-"]),
        BTreeSet::from(["check-config".to_owned()])
    );
    let top = complete(&["--"]);
    assert_eq!(top, long_options(&help(&[])), "top-level options");
    assert!(top.contains("--version"), "{top:?}");
    for cmd in &commands {
        let want = long_options(&help(&[cmd]));
        assert!(want.contains("--config"), "{cmd}: {want:?}");
        assert_eq!(complete(&[cmd, "--"]), want, "{cmd}");
        // The command is found behind -c FILE too.
        assert_eq!(complete(&["--config", "x.json", cmd, "--"]), want, "{cmd}");
    }
    assert!(complete(&["check", "--"]).contains("--timeout"));
    assert!(complete(&["check", "-"]).contains("-t"));
}

#[test]
fn the_completion_knows_the_values_of_options() {
    let env = Env::new("completion");
    let statuses = complete(&["list", "--status", ""]);
    let listed = help(&["list"]);
    assert_eq!(statuses.len(), 5, "{statuses:?}");
    for s in &statuses {
        assert!(listed.contains(s.as_str()), "{s} not in list --help");
    }
    assert_eq!(
        complete(&["list", "--status", "up"]),
        BTreeSet::from(["uploaded".to_owned(), "uploading".to_owned()])
    );
    // FILE values and the files of upload-test and retry: the file system.
    let img = env.put("Sega_1", "probe.jpg", b"x");
    let dir = img.parent().unwrap().to_str().unwrap().to_owned();
    let probe = format!("{dir}/probe.jpg");
    let partial = format!("{dir}/pro");
    assert_eq!(
        complete(&["upload-test", &partial]),
        BTreeSet::from([probe.clone()])
    );
    assert_eq!(
        complete(&["retry", "--force", &partial]),
        BTreeSet::from([probe.clone()])
    );
    assert_eq!(complete(&["-c", &partial]), BTreeSet::from([probe.clone()]));
    assert_eq!(
        complete(&["migrate-db", "--from", &partial]),
        BTreeSet::from([probe])
    );
    // Values it cannot know: nothing rather than something wrong.
    assert!(complete(&["check", "--warn-failed", ""]).is_empty());
    assert!(complete(&["list", "--limit", ""]).is_empty());
    assert!(
        complete(&["status", ""]).is_empty(),
        "status takes no argument"
    );
}
